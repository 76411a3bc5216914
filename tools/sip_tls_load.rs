//! SIP over TLS call-rate load: drives INVITE / 200 / ACK / BYE / 200 calls at a fixed rate
//! to a running voxline's TLS listener and reports how many completed, the INVITE → 200
//! latency and the TLS handshakes it took.
//!
//! ```text
//! cargo run --release --bin voxline-sip-tls-load -- --target 127.0.0.1:5061 \
//!     --ca cert.pem --server-name localhost --rate 200 --seconds 10 [--reuse no]
//! ```
//!
//! `--reuse yes` (the default) sends every call over one TLS connection, as a trunk that
//! reuses its connection does; `--reuse no` opens a connection for each call and closes it
//! after the BYE's 200, so the two runs side by side show what reuse saves (the handshake).
//! Used by `tools/sip-tls-bench.sh` for docs/PERFORMANCE.md.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// How long a call may take from INVITE to the BYE's 200 before it counts as failed.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

struct Options {
    target: SocketAddr,
    ca: String,
    server_name: String,
    rate: u32,
    seconds: u32,
    reuse: bool,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        target: "127.0.0.1:5061".parse()?,
        ca: String::new(),
        server_name: "localhost".into(),
        rate: 100,
        seconds: 10,
        reuse: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--target" => o.target = v.parse()?,
            "--ca" => o.ca = v,
            "--server-name" => o.server_name = v,
            "--rate" => o.rate = v.parse()?,
            "--seconds" => o.seconds = v.parse()?,
            "--reuse" => o.reuse = v == "yes",
            _ => bail!("unknown option {a}"),
        }
    }
    if o.ca.is_empty() {
        bail!(
            "--ca FILE (the PEM certificate voxline's TLS listener presents, or its CA) is required"
        );
    }
    Ok(o)
}

fn connector(ca: &str) -> anyhow::Result<TlsConnector> {
    let pem = std::fs::read(ca).with_context(|| format!("reading {ca}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.with_context(|| format!("{ca}: not a PEM certificate"))?)
            .with_context(|| format!("{ca}: not a usable CA certificate"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One SIP message framed from the stream: its start line, headers and body length.
fn frame(buf: &mut Vec<u8>) -> Option<String> {
    // Keepalive CRLFs between messages.
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (k.eq_ignore_ascii_case("content-length") || k == "l").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0usize);
    if buf.len() < end + len {
        return None;
    }
    buf.drain(..end + len);
    Some(head)
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

struct Call {
    started: Instant,
    answered: bool,
}

#[derive(Default)]
struct Tally {
    completed: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

/// Requests of call `n` over a connection whose local address is `local`.
fn invite(target: SocketAddr, local: SocketAddr, n: u64) -> (String, String) {
    let call_id = format!("tls-{n}-{}@{}", std::process::id(), local.ip());
    let body = format!(
        "v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
        ip = local.ip()
    );
    let msg = format!(
        "INVITE sips:bench@{target} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-i{n};alias\r\nMax-Forwards: 70\r\nFrom: <sips:load@{local}>;tag=t{n}\r\nTo: <sips:bench@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sips:load@{local};transport=tls>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    (call_id, msg)
}

fn in_dialog(
    method: &str,
    target: SocketAddr,
    local: SocketAddr,
    ok: &str,
    branch: u64,
) -> Option<String> {
    let call_id = header(ok, "Call-ID")?;
    let from = header(ok, "From")?;
    let to = header(ok, "To")?;
    let cseq = if method == "ACK" { 1 } else { 2 };
    Some(format!(
        "{method} sips:bench@{target} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bK-r{branch};alias\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ))
}

/// Runs calls over one connection: those `calls` yields, until it closes. Returns the tally.
async fn connection(
    opts: Arc<Options>,
    tls: TlsConnector,
    mut calls: mpsc::Receiver<u64>,
    close_after_each: bool,
) -> anyhow::Result<(Tally, u64)> {
    let mut tally = Tally::default();
    let mut handshakes = 0u64;
    let mut branches = 0u64;
    let name = ServerName::try_from(opts.server_name.clone())?;
    'outer: loop {
        // Without reuse, a connection is opened for a call, not ahead of one.
        let first = if close_after_each {
            match calls.recv().await {
                Some(n) => Some(n),
                None => break 'outer,
            }
        } else {
            None
        };
        let tcp = TcpStream::connect(opts.target).await?;
        tcp.set_nodelay(true)?;
        let local = tcp.local_addr()?;
        let mut stream = tls.connect(name.clone(), tcp).await?;
        handshakes += 1;
        let mut pending: HashMap<String, Call> = HashMap::new();
        let mut buf = Vec::with_capacity(16 * 1024);
        let mut chunk = vec![0u8; 16 * 1024];
        let mut no_more = false;
        let mut sent_on_this = 0u64;
        if let Some(n) = first {
            let (id, msg) = invite(opts.target, local, n);
            stream.write_all(msg.as_bytes()).await?;
            pending.insert(
                id,
                Call {
                    started: Instant::now(),
                    answered: false,
                },
            );
            sent_on_this = 1;
        }
        loop {
            if no_more && pending.is_empty() {
                break 'outer;
            }
            if close_after_each && sent_on_this > 0 && pending.is_empty() {
                let _ = stream.shutdown().await;
                continue 'outer;
            }
            let one_call_done = close_after_each && sent_on_this > 0;
            let may_send = !(no_more || one_call_done);
            tokio::select! {
                n = calls.recv(), if may_send => match n {
                    Some(n) => {
                        let (id, msg) = invite(opts.target, local, n);
                        stream.write_all(msg.as_bytes()).await?;
                        pending.insert(id, Call { started: Instant::now(), answered: false });
                        sent_on_this += 1;
                    }
                    None => no_more = true,
                },
                r = stream.read(&mut chunk) => {
                    let n = r?;
                    if n == 0 {
                        tally.failed += pending.len() as u64;
                        eprintln!("the connection closed with {} calls pending", pending.len());
                        if no_more { break 'outer; }
                        continue 'outer;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(msg) = frame(&mut buf) {
                        handle(&msg, &opts, local, &mut stream, &mut pending, &mut tally, &mut branches)
                            .await?;
                    }
                }
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    let before = pending.len();
                    pending.retain(|_, c| c.started.elapsed() < CALL_DEADLINE);
                    tally.failed += (before - pending.len()) as u64;
                }
            }
        }
    }
    Ok((tally, handshakes))
}

async fn handle(
    msg: &str,
    opts: &Options,
    local: SocketAddr,
    stream: &mut tokio_rustls::client::TlsStream<TcpStream>,
    pending: &mut HashMap<String, Call>,
    tally: &mut Tally,
    branches: &mut u64,
) -> anyhow::Result<()> {
    let Some(status) = msg.strip_prefix("SIP/2.0 ") else {
        // A request from voxline (none expected in this flow): ignore.
        return Ok(());
    };
    let code: u16 = status.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
    let Some(call_id) = header(msg, "Call-ID").map(str::to_owned) else {
        return Ok(());
    };
    let method = header(msg, "CSeq")
        .and_then(|c| c.split_whitespace().nth(1))
        .unwrap_or("");
    let Some(call) = pending.get_mut(&call_id) else {
        return Ok(());
    };
    match (method, code) {
        (_, 100..=199) => {}
        ("INVITE", 200..=299) if !call.answered => {
            call.answered = true;
            tally.latencies.push(call.started.elapsed());
            for m in ["ACK", "BYE"] {
                *branches += 1;
                if let Some(req) = in_dialog(m, opts.target, local, msg, *branches) {
                    stream.write_all(req.as_bytes()).await?;
                }
            }
        }
        ("BYE", 200..=299) => {
            pending.remove(&call_id);
            tally.completed += 1;
        }
        ("INVITE", 200..=299) => {}
        _ => {
            eprintln!("call {call_id}: {method} answered {code}");
            pending.remove(&call_id);
            tally.failed += 1;
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let opts = Arc::new(options()?);
    let tls = connector(&opts.ca)?;
    let total = u64::from(opts.rate) * u64::from(opts.seconds);
    // Without reuse, enough connections in parallel for the calls in flight.
    let lanes = if opts.reuse {
        1
    } else {
        (opts.rate / 10).clamp(1, 64)
    };
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..lanes {
        let (tx, rx) = mpsc::channel(1024);
        senders.push(tx);
        tasks.push(tokio::spawn(connection(
            opts.clone(),
            tls.clone(),
            rx,
            !opts.reuse,
        )));
    }
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / f64::from(opts.rate.max(1)));
    for n in 0..total {
        // Paced on an absolute schedule.
        tokio::time::sleep_until((start + interval * n as u32).into()).await;
        let lane = (n % lanes as u64) as usize;
        if senders[lane].send(n).await.is_err() {
            // The task's own error says why.
            let task = tasks.swap_remove(lane);
            return match task.await? {
                Err(e) => Err(e.context("a connection failed")),
                Ok(_) => Err(anyhow::anyhow!("a connection task ended early")),
            };
        }
    }
    drop(senders);
    let mut tally = Tally::default();
    let mut handshakes = 0;
    for t in tasks {
        let (t, h) = t.await??;
        tally.completed += t.completed;
        tally.failed += t.failed;
        tally.latencies.extend(t.latencies);
        handshakes += h;
    }
    let elapsed = start.elapsed();
    tally.latencies.sort();
    let pct = |p: f64| {
        tally
            .latencies
            .get(((tally.latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "reuse={} rate={}/s calls={} completed={} failed={} handshakes={} elapsed={:.1}s INVITE->200 p50={:?} p99={:?}",
        if opts.reuse { "yes" } else { "no" },
        opts.rate,
        total,
        tally.completed,
        tally.failed,
        handshakes,
        elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    );
    Ok(())
}
