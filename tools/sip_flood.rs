//! A SIP flood for `tools/sip-flood.sh`: out-of-dialog requests (each with its own Call-ID and
//! branch, so every one is a new transaction) mixed with garbage datagrams, sent as fast as the
//! target rate allows to one UDP address for a fixed time.
//!
//! ```text
//! voxline-sip-flood --target 127.0.0.1:5390 --rate 150000 --seconds 15
//!     [--method OPTIONS] [--garbage-percent 20] [--sockets 4]
//! ```
//!
//! Datagrams go out in 1 ms batches paced on an absolute clock; when the machine cannot keep
//! up the tool sends as fast as it can and reports the rate it reached. Responses are read and
//! counted (and discarded) so the target's replies do not pile up in our receive buffers.
//!
//! 127.0.0.1 (or another loopback address) only; at most 120 s.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Longest run.
const MAX_SECONDS: u64 = 120;
/// Most sending sockets.
const MAX_SOCKETS: usize = 64;

fn main() -> anyhow::Result<()> {
    let mut target: SocketAddr = "127.0.0.1:5390".parse()?;
    let mut rate = 150_000u64;
    let mut seconds = 15u64;
    let mut method = "OPTIONS".to_string();
    let mut garbage_percent = 20u64;
    let mut sockets = 4usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().context("missing value")?;
        match a.as_str() {
            "--target" => target = v.parse()?,
            "--rate" => rate = v.parse()?,
            "--seconds" => seconds = v.parse()?,
            "--method" => method = v,
            "--garbage-percent" => garbage_percent = v.parse()?,
            "--sockets" => sockets = v.parse()?,
            _ => bail!("unknown option {a}"),
        }
    }
    if !target.ip().is_loopback() {
        bail!("--target must be a loopback address");
    }
    if seconds == 0 || seconds > MAX_SECONDS {
        bail!("--seconds must be 1..={MAX_SECONDS}");
    }
    if sockets == 0 || sockets > MAX_SOCKETS {
        bail!("--sockets must be 1..={MAX_SOCKETS}");
    }
    if garbage_percent > 100 || rate == 0 {
        bail!("--garbage-percent must be 0..=100 and --rate positive");
    }
    if !method.chars().all(|c| c.is_ascii_uppercase()) {
        bail!("--method must be a SIP method name");
    }
    let socks: Vec<UdpSocket> = (0..sockets)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()?;
    let ports: Vec<u16> = socks
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;

    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let per_ms = rate.div_ceil(1000).max(1);
    let (mut sent, mut send_errors, mut replies) = (0u64, 0u64, 0u64);
    let mut buf = vec![0u8; 65_536];
    let mut tick = start;
    let mut n = 0u64;
    while Instant::now() < end {
        for _ in 0..per_ms {
            let k = (n % sockets as u64) as usize;
            let sock = &socks[k];
            let msg = if n % 100 < garbage_percent {
                garbage(n)
            } else {
                request(&method, target, ports[k], n)
            };
            n += 1;
            match sock.send_to(&msg, target) {
                Ok(_) => sent += 1,
                Err(_) => send_errors += 1,
            }
        }
        for s in &socks {
            while s.recv_from(&mut buf).is_ok() {
                replies += 1;
            }
        }
        tick += Duration::from_millis(1);
        let now = Instant::now();
        if tick > now {
            std::thread::sleep(tick - now);
        }
    }
    // Replies still in flight.
    let drain_until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < drain_until {
        let mut got = false;
        for s in &socks {
            while s.recv_from(&mut buf).is_ok() {
                replies += 1;
                got = true;
            }
        }
        if !got {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "sent {sent} datagrams in {secs:.1} s ({:.0}/s; asked {rate}/s), {send_errors} send errors, {replies} replies",
        sent as f64 / secs
    );
    Ok(())
}

/// A new out-of-dialog request: fresh Call-ID, From tag and branch.
fn request(method: &str, target: SocketAddr, port: u16, n: u64) -> Vec<u8> {
    format!(
        "{method} sip:flood@{target} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-flood-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:flood@127.0.0.1>;tag=f{n}\r\n\
         To: <sip:flood@{target}>\r\n\
         Call-ID: flood-{n}@127.0.0.1\r\n\
         CSeq: 1 {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Bytes that are not SIP: a varying length of varying content.
fn garbage(n: u64) -> Vec<u8> {
    let len = 40 + (n.wrapping_mul(2_654_435_761) % 400) as usize;
    (0..len)
        .map(|i| (n.wrapping_add(i as u64).wrapping_mul(31) % 251) as u8)
        .collect()
}
