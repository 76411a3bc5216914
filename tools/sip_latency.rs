//! INVITE → 200 latency probe: sends one INVITE at a time over UDP to a running voxline,
//! measures the time to the 200 OK with microsecond resolution, then ACKs and BYEs the call.
//!
//! `cargo run --release --bin voxline-sip-latency -- --target 127.0.0.1:5060 --calls 2000 --rate 200`
//!
//! SIPp's `-trace_rtt` only has millisecond resolution, hence this tool.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut target: SocketAddr = "127.0.0.1:5060".parse()?;
    let mut calls = 1000usize;
    let mut rate = 100u32;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().context("missing value")?;
        match a.as_str() {
            "--target" => target = v.parse()?,
            "--calls" => calls = v.parse()?,
            "--rate" => rate = v.parse()?,
            _ => bail!("unknown option {a}"),
        }
    }
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    let local = sock.local_addr()?;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let mut samples = Vec::with_capacity(calls);
    let start = Instant::now();
    let mut buf = vec![0u8; 65535];
    for i in 0..calls {
        // Pace against an absolute schedule.
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let call_id = format!("lat-{i}-{}@{}", std::process::id(), local.ip());
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
            ip = local.ip()
        );
        let invite = format!(
            "INVITE sip:bench@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-i{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=t{i}\r\nTo: <sip:bench@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:probe@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let t0 = Instant::now();
        sock.send_to(invite.as_bytes(), target)?;
        let to_tag = loop {
            let (n, _) = sock.recv_from(&mut buf).context("no answer within 2 s")?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("SIP/2.0 200") && text.contains(&call_id) {
                samples.push(t0.elapsed());
                break to_header(&text).unwrap_or_default();
            }
        };
        let ack = format!(
            "ACK sip:bench@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-a{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=t{i}\r\nTo: {to_tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(ack.as_bytes(), target)?;
        let bye = format!(
            "BYE sip:bench@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-b{i};rport\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=t{i}\r\nTo: {to_tag}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        );
        sock.send_to(bye.as_bytes(), target)?;
        loop {
            let (n, _) = sock
                .recv_from(&mut buf)
                .context("no answer to BYE within 2 s")?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.starts_with("SIP/2.0 200") && text.contains("BYE") && text.contains(&call_id) {
                break;
            }
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "calls={} rate={}/s INVITE->200 p50={:?} p90={:?} p99={:?} max={:?}",
        samples.len(),
        rate,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

fn to_header(resp: &str) -> Option<String> {
    resp.lines()
        .find_map(|l| l.strip_prefix("To: ").map(str::to_string))
}
