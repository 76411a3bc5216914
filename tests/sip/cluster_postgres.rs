//! Three voxline nodes sharing one PostgreSQL store (Debian's, started by the test), with SIPp
//! calls on two of them:
//!
//! * **the cluster's calls from any node**: `GET /calls` on node A lists the calls of B and C
//!   with their node;
//! * **kill**: C is killed with SIGKILL mid-call; within `node_timeout_s` a surviving node
//!   marks C's call unfinished, and B's call goes on, still listed;
//! * **control from anywhere**: B's call is hung up through A's API (by record id, forwarded
//!   to B with the API token); SIPp gets B's BYE and the record ends normally;
//! * record ids stay unique across the nodes (each node joined with its own prefix).

use std::time::{Duration, Instant};

use crate::common::postgres::PostgresServer;
use crate::common::{Sipp, VoxlineProcess, scenario, wait_for_file};

const TOKEN: &str = "cluster-test-token";

fn node(url: &str, id: &str) -> VoxlineProcess {
    VoxlineProcess::spawn_with_env(
        &format!(
            "[store]\nurl = \"{url}\"\n\n[http]\ntoken_env = \"VOX_TOKEN\"\n\n\
             [cluster]\nnode_id = \"{id}\"\nheartbeat_s = 1\nnode_timeout_s = 3\n"
        ),
        &[("VOX_TOKEN", TOKEN)],
    )
}

fn api(vox: &VoxlineProcess, method: &str, path: &str) -> (u16, serde_json::Value) {
    let body = (method == "POST").then_some("{}");
    crate::common::http_json_auth(
        vox.http_addr(),
        method,
        path,
        body,
        TOKEN,
        Duration::from_secs(45),
    )
}

/// Polls `GET /calls` on `vox` until `pred` holds for the list, or panics after 15 s.
fn calls_until(
    vox: &VoxlineProcess,
    what: &str,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, calls) = api(vox, "GET", "/calls");
        assert_eq!(code, 200, "{calls}");
        let list = calls.as_array().cloned().unwrap_or_default();
        if pred(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "{what}: GET /calls is {calls:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn on_node<'a>(calls: &'a [serde_json::Value], node: &str) -> Option<&'a serde_json::Value> {
    calls
        .iter()
        .find(|c| c["node"] == node && c["state"] == "answered")
}

#[test]
fn a_cluster_lists_controls_and_reaps_calls_across_its_nodes() {
    let pg = PostgresServer::start();
    let url = pg.create_db("cluster");
    let a = node(&url, "a");
    let b = node(&url, "b");
    let c = node(&url, "c");
    let dir = tempfile::tempdir().unwrap();

    // A call on B that waits for voxline's BYE, and a long call on C.
    let b_up = dir.path().join("b-up");
    let b_call = Sipp::spawn(
        &[
            "-sf",
            &scenario("uac_wait_for_bye.xml"),
            &b.sip_addr().to_string(),
            "-s",
            "1000",
            "-m",
            "1",
            "-set",
            "marker",
            b_up.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let c_up = dir.path().join("c-up");
    let c_call = Sipp::spawn(
        &[
            "-sf",
            &scenario("uac_long_call.xml"),
            &c.sip_addr().to_string(),
            "-s",
            "1000",
            "-m",
            "1",
            "-d",
            "60000",
            "-set",
            "marker",
            c_up.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    assert!(
        wait_for_file(&b_up, Duration::from_secs(10)),
        "B's call did not come up"
    );
    assert!(
        wait_for_file(&c_up, Duration::from_secs(10)),
        "C's call did not come up"
    );

    // A, which has no call, lists both with their nodes.
    let calls = calls_until(&a, "B's and C's calls on A", |l| {
        on_node(l, "b").is_some() && on_node(l, "c").is_some()
    });
    let b_record = on_node(&calls, "b").unwrap()["record_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let c_record = on_node(&calls, "c").unwrap()["record_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(
        b_record.split('-').next(),
        c_record.split('-').next(),
        "two nodes share a record-id prefix"
    );
    // B lists its own call live (with its handle) and C's from the store.
    let on_b = calls_until(&b, "B's own call", |l| {
        on_node(l, "b").is_some_and(|c| c["id"] != 0) && on_node(l, "c").is_some()
    });
    assert_eq!(on_b.len(), 2, "{on_b:#?}");

    // C dies mid-call.
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &c.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(15);
    let c_after = loop {
        let (code, rec) = api(&a, "GET", &format!("/calls/{c_record}"));
        assert_eq!(code, 200, "{rec}");
        if rec["unfinished"] == true {
            break rec;
        }
        assert!(
            Instant::now() < deadline,
            "C's call not marked unfinished after C died: {rec:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(c_after["node"], "c");
    assert!(
        c_after["end_reason"]
            .as_str()
            .is_some_and(|r| r.contains("node stopped")),
        "{c_after:#}"
    );
    // B's call is unaffected: still listed as in progress, on A too; C's is gone.
    let after = calls_until(&a, "B's call after C died", |l| {
        on_node(l, "b").is_some() && on_node(l, "c").is_none()
    });
    assert_eq!(after.len(), 1, "{after:#?}");

    // A forwards a hang-up of B's call to B; B's answer comes back, SIPp gets the BYE.
    let (code, body) = api(&a, "POST", &format!("/calls/{b_record}/hangup"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["hangup"], true, "{body}");
    b_call
        .wait()
        .assert_success("B's call hung up through A's API");
    let deadline = Instant::now() + Duration::from_secs(10);
    let b_after = loop {
        let (code, rec) = api(&a, "GET", &format!("/calls/{b_record}"));
        assert_eq!(code, 200, "{rec}");
        if !rec["ended_at"].is_null() {
            break rec;
        }
        assert!(Instant::now() < deadline, "B's record never ended: {rec:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(b_after["unfinished"], false, "{b_after:#}");
    assert_eq!(b_after["node"], "b");

    // A call no node has: 404, from A and from a forwarded request alike.
    let (code, body) = api(&a, "POST", "/calls/1-999999/hangup");
    assert_eq!(code, 404, "{body}");
    // C's call is over for the cluster: hanging it up is a 404, not a request to a dead node.
    let (code, body) = api(&b, "POST", &format!("/calls/{c_record}/hangup"));
    assert_eq!(code, 404, "{body}");
    drop(c_call);
}

/// The SIP ports (each node's) in the Contact of every REGISTER the registrar got so far, in
/// order.
fn registering_ports(registrar: &Sipp) -> Vec<u16> {
    let trace = registrar.messages();
    trace
        .split("\nREGISTER sip:")
        .skip(1)
        .filter_map(|msg| {
            let contact = msg
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .find(|l| l.to_ascii_lowercase().starts_with("contact:"))?;
            let hostport = contact.split('@').nth(1)?;
            let port: String = hostport
                .split(':')
                .nth(1)?
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            port.parse().ok()
        })
        .collect()
}

#[test]
fn a_trunk_is_registered_by_one_node_and_another_takes_over_when_it_dies() {
    let pg = PostgresServer::start();
    let url = pg.create_db("leases");
    let registrar = Sipp::spawn(
        &["-sf", &scenario("uas_registrar.xml"), "-m", "100000"],
        Duration::from_secs(120),
    );
    let config = |id: &str| {
        format!(
            "[store]\nurl = \"{url}\"\n\n[cluster]\nnode_id = \"{id}\"\nheartbeat_s = 1\n\
             node_timeout_s = 3\n\n[[trunk]]\nname = \"carrier\"\nprofile = \"generic\"\n\
             host = \"127.0.0.1\"\nport = {}\ntransport = \"udp\"\nusername = \"vox\"\npassword = \"secret\"\n\
             register = true\nregister_expires_s = 60\n",
            registrar.port()
        )
    };
    let a = VoxlineProcess::spawn(&config("a"));
    let b = VoxlineProcess::spawn(&config("b"));
    let ports = [a.sip_addr().port(), b.sip_addr().port()];

    // One node registers; the other does not, over several heartbeats and a refresh (the
    // registrar grants 10 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while registering_ports(&registrar).is_empty() {
        assert!(Instant::now() < deadline, "no REGISTER from either node");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(6));
    let seen = registering_ports(&registrar);
    let holder = seen[0];
    assert!(ports.contains(&holder), "{seen:?} vs nodes {ports:?}");
    assert!(
        seen.iter().all(|p| *p == holder),
        "both nodes registered the trunk: {seen:?}"
    );
    assert!(seen.len() >= 2, "the binding was not refreshed: {seen:?}");

    // The holder dies; the other node registers before the binding (10 s) runs out.
    let (dead, survivor) = if holder == ports[0] {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let before = seen.len();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &dead.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now_seen = registering_ports(&registrar);
        if now_seen[before..].contains(&survivor.sip_addr().port()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the surviving node did not register within the binding's 10 s: {now_seen:?}\n{}",
            survivor.output()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(registrar);
}
