//! Hostile TCP clients against a real voxline process: connections beyond the per-source
//! limit are closed at once while other sources and UDP keep working, the total limit holds
//! across sources, a slot comes back when its connection closes, an idle connection is closed,
//! and a message trickled slower than the message timeout does not hold its connection.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;

const CONFIG: &str = r#"
[sip]
tcp_max_connections = 6
tcp_max_per_source = 4
tcp_idle_timeout_s = 2
tcp_message_timeout_s = 1
"#;

/// Bound on waits for something that must happen.
const WAIT: Duration = Duration::from_secs(8);

/// A TCP connection to voxline from the loopback address `from` (127.0.0.x: each is a
/// distinct source for voxline). `std` cannot bind before connecting, so `nix` opens it.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .expect("socket");
    let local: std::net::SocketAddrV4 = format!("{from}:0").parse().expect("addr");
    bind(fd.as_raw_fd(), &SockaddrIn::from(local)).expect("bind source");
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).expect("connect");
    let tcp = TcpStream::from(fd);
    tcp.set_read_timeout(Some(WAIT)).expect("timeout");
    tcp
}

/// Whether voxline answers an OPTIONS on this connection with 200 (false when the
/// connection is closed or reset instead).
fn answers(tcp: &mut TcpStream, vox: SocketAddr) -> bool {
    let local = tcp.local_addr().expect("local");
    let req = options_request("TCP", local, vox, &unique("lim-"));
    if tcp.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    status_code(&String::from_utf8_lossy(&got)) == Some(200)
}

/// Whether the peer has closed this connection (EOF or reset) within [`WAIT`].
fn closed_by_voxline(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn per_source_and_total_limits_close_the_excess_and_nothing_else() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let sip = vox.sip_addr();
    // Four from 127.0.0.1: all served.
    let mut first: Vec<TcpStream> = (0..4).map(|_| connect_from("127.0.0.1", sip)).collect();
    for c in &mut first {
        assert!(
            answers(c, sip),
            "a connection within the limit was not served"
        );
    }
    // A fifth from the same source is closed at once.
    let mut fifth = connect_from("127.0.0.1", sip);
    assert!(
        closed_by_voxline(&mut fifth),
        "the fifth connection stayed open"
    );
    // Another source gets its own four, up to the total of six.
    let mut second: Vec<TcpStream> = (0..2).map(|_| connect_from("127.0.0.2", sip)).collect();
    for c in &mut second {
        assert!(answers(c, sip), "another source was refused");
    }
    let mut seventh = connect_from("127.0.0.3", sip);
    assert!(
        closed_by_voxline(&mut seventh),
        "the total limit did not hold"
    );
    // UDP and the API are untouched.
    let (code, _) = http_get(vox.http_addr(), "/health", WAIT).expect("health");
    assert_eq!(code, 200);
    let udp = RawUdp::bind();
    let id = unique("udp-");
    udp.send(sip, options_request("UDP", udp.local, sip, &id).as_bytes());
    let reply = udp.final_response(sip, WAIT).expect("UDP answered");
    assert_eq!(status_code(&reply), Some(200));
    // Closing one gives its slot back.
    drop(first.pop());
    let mut again = (0..20)
        .find_map(|_| {
            let mut c = connect_from("127.0.0.1", sip);
            if answers(&mut c, sip) {
                Some(c)
            } else {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        })
        .expect("a freed slot was not given back");
    assert!(answers(&mut again, sip));
    vox.assert_running();
}

#[test]
fn idle_and_trickling_connections_are_closed() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let sip = vox.sip_addr();
    // Nothing sent: closed after the idle timeout.
    let mut idle = connect_from("127.0.0.1", sip);
    assert!(
        closed_by_voxline(&mut idle),
        "an idle connection stayed open"
    );
    // Half a message, then nothing: closed after the message timeout, well before idle.
    let mut slow = connect_from("127.0.0.1", sip);
    slow.write_all(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1")
        .expect("write");
    assert!(
        closed_by_voxline(&mut slow),
        "a trickled message held its connection"
    );
    // A connection that keeps talking stays up past the idle timeout.
    let mut busy = connect_from("127.0.0.1", sip);
    for _ in 0..4 {
        assert!(answers(&mut busy, sip), "an active connection was closed");
        std::thread::sleep(Duration::from_millis(900));
    }
    vox.assert_running();
}
