//! The floor for `tools/media-bench.sh`: N UDP sockets on consecutive even ports, each read at
//! a fixed tick (one `recvmmsg`, as voxline's media workers do) and every datagram sent
//! straight back to where it came from, with no processing. Under `voxline-rtp-load
//! --rtp-only` its CPU time is what the operating system charges for one RTP packet in and out
//! per call per 20 ms, and the wake-ups: what no user agent can go below on this machine.
//!
//! ```text
//! voxline-udp-reflector --base 63100 --calls 300 --seconds 60 [--tick-ms 20]
//!     [--timestamps yes] [--connect yes] [--extra-thread yes]
//! ```
//!
//! The options measure what a choice of voxline's costs at the OS level (docs/PERFORMANCE.md):
//! `--timestamps` asks for `SO_TIMESTAMPNS` kernel receive times as voxline does, `--connect`
//! connects each socket to its first peer and sends with `send` (a cached route), and
//! `--extra-thread` starts an idle thread: the kernel takes a reference on each socket's file
//! for every system call of a multi-threaded process, which voxline is.
//!
//! 127.0.0.1 only; at most 1000 sockets; stops by itself after `--seconds`.

use std::io::IoSliceMut;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, setsockopt, sockopt};

/// Most sockets one run may open.
const MAX_CALLS: usize = 1000;
/// Longest run.
const MAX_SECONDS: u64 = 900;
/// Datagrams read per `recvmmsg`.
const BATCH: usize = 4;

fn yes(v: &str) -> anyhow::Result<bool> {
    match v {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => bail!("expected yes or no, got {v}"),
    }
}

fn main() -> anyhow::Result<()> {
    let mut base = 63100u16;
    let mut calls = 100usize;
    let mut seconds = 60u64;
    let mut tick_ms = 20u64;
    let (mut stamps, mut connect, mut thread) = (false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().context("missing value")?;
        match a.as_str() {
            "--base" => base = v.parse()?,
            "--calls" => calls = v.parse()?,
            "--seconds" => seconds = v.parse()?,
            "--tick-ms" => tick_ms = v.parse()?,
            "--timestamps" => stamps = yes(&v)?,
            "--connect" => connect = yes(&v)?,
            "--extra-thread" => thread = yes(&v)?,
            _ => bail!("unknown option {a}"),
        }
    }
    if calls == 0 || calls > MAX_CALLS || seconds > MAX_SECONDS || tick_ms == 0 {
        bail!("--calls 1..={MAX_CALLS}, --seconds ..={MAX_SECONDS}, --tick-ms > 0");
    }
    if usize::from(base) < 1024 || usize::from(base) + 2 * calls > 65535 {
        bail!("--base out of range");
    }
    let sockets = (0..calls)
        .map(|i| {
            // invariant: calls <= MAX_CALLS and the range check above keep the port in u16.
            let port = base + 2 * i as u16;
            let s = UdpSocket::bind(("127.0.0.1", port)).with_context(|| format!("bind {port}"))?;
            s.set_nonblocking(true)?;
            if stamps {
                setsockopt(&s, sockopt::ReceiveTimestampns, &true)?;
            }
            Ok(s)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    if thread {
        // Idle, and gone with the process.
        std::thread::spawn(|| std::thread::sleep(Duration::from_secs(MAX_SECONDS + 60)));
    }
    let mut connected = vec![false; calls];
    let mut headers: MultiHeaders<SockaddrStorage> =
        MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(nix::sys::time::TimeSpec)));
    let mut bufs = [[0u8; 2048]; BATCH];
    let start = Instant::now();
    let tick = Duration::from_millis(tick_ms);
    let end = start + Duration::from_secs(seconds);
    let mut reflected = 0u64;
    let mut k = 0u32;
    while Instant::now() < end {
        k += 1;
        if let Some(wait) = (start + tick * k).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        for (s, connected) in sockets.iter().zip(connected.iter_mut()) {
            loop {
                let mut meta: [(usize, Option<SocketAddr>); BATCH] = [(0, None); BATCH];
                let count = {
                    let [b0, b1, b2, b3] = &mut bufs;
                    let mut iovs = [
                        [IoSliceMut::new(&mut b0[..])],
                        [IoSliceMut::new(&mut b1[..])],
                        [IoSliceMut::new(&mut b2[..])],
                        [IoSliceMut::new(&mut b3[..])],
                    ];
                    let results = match recvmmsg(
                        s.as_raw_fd(),
                        &mut headers,
                        iovs.iter_mut(),
                        MsgFlags::MSG_DONTWAIT,
                        None,
                    ) {
                        Ok(r) => r,
                        Err(nix::errno::Errno::EINTR) => continue,
                        Err(_) => break,
                    };
                    let mut count = 0;
                    for (slot, msg) in meta.iter_mut().zip(results) {
                        let src = msg
                            .address
                            .and_then(|a| a.as_sockaddr_in().map(|v4| (*v4).into()))
                            .map(SocketAddr::V4);
                        *slot = (msg.bytes, src);
                        count += 1;
                    }
                    count
                };
                for (i, (len, src)) in meta.iter().take(count).enumerate() {
                    if let (Some(src), Some(data)) = (src, bufs[i].get(..*len)) {
                        if !connect {
                            let _ = s.send_to(data, src);
                        } else if *connected {
                            let _ = s.send(data);
                        } else {
                            *connected = s.connect(src).is_ok();
                            let _ = s.send_to(data, src);
                        }
                        reflected += 1;
                    }
                }
                if count < BATCH {
                    break;
                }
            }
        }
    }
    println!("reflected {reflected} datagrams on {calls} sockets in {seconds} s");
    Ok(())
}
