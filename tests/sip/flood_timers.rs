//! Timers keep running under a flood (issue 9: the SIP driver served inbound messages first,
//! so under a flood its retransmissions, timeouts, refreshes and commands waited). A real
//! voxline with a trunk it pings with OPTIONS every second takes a flood of new OPTIONS from
//! a thread that sends as fast as it can, for five seconds; the pings keep coming during the
//! flood, the API keeps answering, and the flood is refused and counted, not stored.

use crate::common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{VoxlineProcess, http_get};

const FLOOD: Duration = Duration::from_secs(5);

#[test]
fn keepalive_pings_and_the_api_go_on_during_a_flood() {
    let probe = UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    probe
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let port = probe.local_addr().expect("addr").port();
    let mut vox = VoxlineProcess::spawn(&format!(
        "[limits]\nmax_transactions = 1024\n\
         [[trunk]]\nname = \"probe\"\nhost = \"127.0.0.1\"\nport = {port}\nregister = false\n\
         options_keepalive_s = 1\n"
    ));
    let target = vox.sip_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..1u64)
        .map(|k| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").expect("flood socket");
                let mut n = k << 40;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let msg = format!(
                        "OPTIONS sip:flood@{target} SIP/2.0\r\n\
                         Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-f{n}\r\nMax-Forwards: 70\r\n\
                         From: <sip:f@127.0.0.1>;tag=f{n}\r\nTo: <sip:flood@{target}>\r\n\
                         Call-ID: f{n}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                    );
                    let _ = sock.send_to(msg.as_bytes(), target);
                }
                n - (k << 40)
            })
        })
        .collect();
    // Pings that arrive during the flood (after a first second for it to build up).
    let start = Instant::now();
    let mut pings = 0;
    let mut buf = [0u8; 4096];
    while start.elapsed() < FLOOD {
        if let Ok((n, _)) = probe.recv_from(&mut buf)
            && buf[..n].starts_with(b"OPTIONS ")
            && start.elapsed() > Duration::from_secs(1)
        {
            pings += 1;
        }
    }
    let (api, _) = http_get(vox.http_addr(), "/health", Duration::from_secs(5)).expect("health");
    stop.store(true, Ordering::Relaxed);
    let sent: u64 = flooders
        .into_iter()
        .map(|t| t.join().expect("flooder"))
        .sum();
    assert!(
        pings >= 2,
        "{pings} keepalive OPTIONS in the flood's last 4 s ({sent} flood datagrams sent)"
    );
    assert_eq!(api, 200);
    let (_, metrics) =
        http_get(vox.http_addr(), "/metrics", Duration::from_secs(5)).expect("metrics");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        value("voxline_sip_server_transactions") <= 1024,
        "{metrics}"
    );
    assert!(
        value("voxline_sip_dropped_overload_total") > 0,
        "the flood never reached the bound: {metrics}"
    );
    vox.assert_running();
}
