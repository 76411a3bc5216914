//! Draining a node (`POST /drain`, or SIGTERM with `voxline run --drain`): new INVITEs and
//! OPTIONS probes get 503 with Retry-After (a dispatcher such as Kamailio's fails over and
//! stops sending), `GET /health` says "draining", the call in progress goes on to its end
//! (SIPp's BYE), or is hung up at `[limits] drain_deadline_s`; then voxline exits 0.

use crate::common::{Sipp, VoxlineProcess, http_json};

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Sends one out-of-dialog request with no body and returns the first final response.
/// Each probe is a new transaction and call: its own branch and Call-ID (a socket may get
/// the port of an earlier one, so the port alone would not do).
fn probe(vox: SocketAddr, method: &str) -> String {
    static PROBES: AtomicU32 = AtomicU32::new(0);
    let n = PROBES.fetch_add(1, Ordering::Relaxed);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let me = sock.local_addr().unwrap();
    let req = format!(
        "{method} sip:1000@{vox} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-drain-{method}-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@{me}>;tag=p1\r\n\
         To: <sip:1000@{vox}>\r\n\
         Call-ID: drain-{method}-{n}@{me}\r\n\
         CSeq: 1 {method}\r\n\
         Contact: <sip:probe@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(req.as_bytes(), vox).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let code: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if code >= 200 {
            return text;
        }
    }
    panic!("no final response to {method}");
}

/// Waits for `n` calls in progress.
fn wait_calls(vox: &VoxlineProcess, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, calls) = http_json(
            vox.http_addr(),
            "GET",
            "/calls",
            None,
            Duration::from_secs(5),
        );
        if calls.as_array().map_or(0, Vec::len) == n {
            return;
        }
        assert!(Instant::now() < deadline, "{calls}\n{}", vox.output());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_drained_node_refuses_new_calls_lets_the_call_finish_and_exits_0() {
    let mut vox = VoxlineProcess::spawn("");
    let target = vox.sip_addr().to_string();
    // Before: OPTIONS is 200.
    assert!(probe(vox.sip_addr(), "OPTIONS").starts_with("SIP/2.0 200"));
    let call = Sipp::spawn(
        &["-sn", "uac", &target, "-m", "1", "-d", "3000"],
        Duration::from_secs(30),
    );
    wait_calls(&vox, 1);

    let t = Duration::from_secs(5);
    let (code, body) = http_json(vox.http_addr(), "POST", "/drain", None, t);
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["draining"], true);
    assert_eq!(body["active_calls"], 1);
    let (code, health) = http_json(vox.http_addr(), "GET", "/health", None, t);
    assert_eq!((code, health["status"].as_str()), (503, Some("draining")));
    assert_eq!(health["active_calls"], 1);
    // Asking again changes nothing.
    let (code, _) = http_json(vox.http_addr(), "POST", "/drain", None, t);
    assert_eq!(code, 202);

    for method in ["OPTIONS", "INVITE"] {
        let r = probe(vox.sip_addr(), method);
        assert!(r.starts_with("SIP/2.0 503"), "{method}: {r}");
        assert!(r.contains("\r\nRetry-After: 30\r\n"), "{method}: {r}");
    }
    // The call in progress is not touched: SIPp hangs up after its 3 s, and voxline goes.
    call.wait()
        .assert_success("the call in progress during the drain");
    let status = vox.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status}\n{}", vox.output());
    assert!(vox.output().contains("drained: no call in progress"));
}

#[test]
fn sigterm_with_drain_hangs_up_at_the_deadline_and_exits_0() {
    let mut vox = VoxlineProcess::spawn_with_args("[limits]\ndrain_deadline_s = 1\n", &["--drain"]);
    let target = vox.sip_addr().to_string();
    // A call that would last 30 s.
    let call = Sipp::spawn(
        &["-sn", "uac", &target, "-m", "1", "-d", "30000"],
        Duration::from_secs(40),
    );
    wait_calls(&vox, 1);
    // (terminate fails if voxline is still running after 20 s: the call would last 30.)
    let status = vox.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}\n{}", vox.output());
    let out = vox.output();
    assert!(
        out.contains("draining: new calls and OPTIONS get 503"),
        "{out}"
    );
    assert!(
        out.contains("drain deadline passed: hanging up the calls in progress"),
        "{out}"
    );
    // SIPp got voxline's BYE (its scenario did not expect one: the call counts as failed).
    let run = call.wait();
    assert!(run.messages.contains("BYE sip:"), "{}\n{out}", run.messages);
}
