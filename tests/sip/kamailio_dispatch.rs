//! voxline behind Kamailio (Debian's `kamailio`), with the shipped configuration
//! (`deploy/kamailio/kamailio.cfg`: dispatcher, OPTIONS probing, Record-Route, pike) and
//! three voxline nodes on loopback ports:
//!
//! * **load spread**: SIPp places 300 calls through Kamailio; all complete, and each node
//!   answered a share of them;
//! * **drain under load**: while SIPp keeps calling, one node is drained (`POST /drain`): no
//!   call fails (INVITEs it refuses with 503 fail over to the others, and Kamailio's probes
//!   take it out), its calls complete, and it exits 0.

use crate::common::{
    KAMAILIO_MODULES as MODULES, KamailioProcess, Sipp, VoxlineProcess, free_sip_port, http_json,
    scenario,
};

use std::path::Path;
use std::time::{Duration, Instant};
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kamailio/kamailio.cfg");

/// Kamailio with the shipped configuration in front of `nodes`.
struct Kamailio {
    process: KamailioProcess,
    port: u16,
}

impl Kamailio {
    fn start(dir: &Path, nodes: &[&VoxlineProcess]) -> Kamailio {
        let list = dir.join("dispatcher.list");
        let lines: String = nodes
            .iter()
            .map(|n| format!("1 sip:{}\n", n.sip_addr()))
            .collect();
        std::fs::write(&list, lines).expect("dispatcher.list");
        let port = free_sip_port();
        let process = KamailioProcess::spawn(
            Path::new(CONFIG),
            &[
                "-L",
                MODULES,
                "-A",
                &format!("LISTEN=udp:127.0.0.1:{port}"),
                "-A",
                &format!("DISPATCHER_LIST=\"{}\"", list.display()),
                // SIPp's calls all come from one address: let pike allow them.
                "-A",
                "PIKE_DENSITY=5000",
                // One UDP worker: with several, a call's 180 can be passed on after its 200,
                // and SIPp's scenario aborts on that (a phone ignores it). A first version
                // accepted a late 180 anywhere (optional="global"), which sends SIPp back to
                // wait for the 200.
                "-A",
                "CHILDREN=1",
                "-m",
                "64",
                "-M",
                "8",
            ],
            dir,
            // Up when its UDP port is taken.
            || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err(),
        );
        Kamailio { process, port }
    }

    fn log(&self) -> String {
        self.process.log()
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// The number of finished calls in a node's records.
fn answered(vox: &VoxlineProcess) -> usize {
    let (code, records) = http_json(
        vox.http_addr(),
        "GET",
        "/records?limit=500",
        None,
        Duration::from_secs(5),
    );
    assert_eq!(code, 200, "{records}");
    records.as_array().map_or(0, |r| {
        r.iter().filter(|c| !c["answered_at"].is_null()).count()
    })
}

fn nodes() -> Vec<VoxlineProcess> {
    (0..3).map(|_| VoxlineProcess::spawn("")).collect()
}

#[test]
fn three_nodes_behind_kamailio_share_300_calls() {
    assert!(
        Path::new(MODULES).join("dispatcher.so").is_file(),
        "kamailio missing: apt-get install kamailio"
    );
    let dir = tempfile::tempdir().unwrap();
    let nodes = nodes();
    let k = Kamailio::start(dir.path(), &nodes.iter().collect::<Vec<_>>());
    let sf = scenario("uac_via_proxy.xml");
    let run = Sipp::spawn(
        &[
            "-sf",
            &sf,
            &k.addr(),
            "-s",
            "1000",
            "-m",
            "300",
            "-r",
            "30",
            "-l",
            "60",
            "-d",
            "500",
        ],
        Duration::from_secs(90),
    )
    .wait();
    run.assert_success(&format!("300 calls through Kamailio\n{}", k.log()));
    let counts: Vec<usize> = nodes.iter().map(answered).collect();
    assert_eq!(counts.iter().sum::<usize>(), 300, "{counts:?}");
    for (i, c) in counts.iter().enumerate() {
        // Round-robin: about 100 each.
        assert!(*c >= 50, "node {i} answered {c} of 300: {counts:?}");
    }
}

#[test]
fn a_node_drained_under_load_fails_no_call_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = nodes();
    let k = Kamailio::start(dir.path(), &nodes.iter().collect::<Vec<_>>());
    let sf = scenario("uac_via_proxy.xml");
    let load = Sipp::spawn(
        &[
            "-sf",
            &sf,
            &k.addr(),
            "-s",
            "1000",
            "-m",
            "300",
            "-r",
            "20",
            "-l",
            "80",
            "-d",
            "2000",
        ],
        Duration::from_secs(120),
    );
    // Once the drained node has calls in progress, drain it.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, calls) = http_json(
            nodes[1].http_addr(),
            "GET",
            "/calls",
            None,
            Duration::from_secs(5),
        );
        if calls.as_array().is_some_and(|c| c.len() >= 3) {
            break;
        }
        assert!(Instant::now() < deadline, "no calls on node 1: {calls}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, body) = http_json(
        nodes[1].http_addr(),
        "POST",
        "/drain",
        None,
        Duration::from_secs(5),
    );
    assert_eq!(code, 202, "{body}");
    let run = load.wait();
    run.assert_success(&format!(
        "300 calls while node 1 drains\n{}\n---- kamailio ----\n{}",
        nodes[1].output(),
        k.log()
    ));
    let status = nodes[1].wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status}\n{}", nodes[1].output());
    let counts: Vec<usize> = [&nodes[0], &nodes[2]].iter().map(|n| answered(n)).collect();
    assert!(
        counts.iter().sum::<usize>() < 300,
        "node 1 answered none: {counts:?}"
    );
}
