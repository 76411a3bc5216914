//! SIP over WebSocket (RFC 7118) as a browser's SIP stack speaks it (JsSIP's shapes: a Via
//! host and a Contact host under `.invalid`, `transport=ws` in the Contact):
//!
//! * the handshake needs the `sip` subprotocol and gets it back; one without it is refused
//!   with HTTP 400 and counted (`voxline_sip_ws_failed_total`);
//! * OPTIONS is answered over the connection, with or without Content-Length (RFC 7118 §5);
//! * a CRLF keepalive gets a CRLF;
//! * a call to the echo agent: the answer and media (plain RTP here) work, and the BYE voxline
//!   sends when the call is hung up through the API reaches the browser over its connection,
//!   although its Contact names a host that does not resolve;
//! * the call of a client that closes its connection ends;
//! * WSS: voxline's certificate verifies against the test CA, SIP flows, and a client
//!   trusting another CA refuses it.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{VoxlineProcess, free_tcp_port, http_get, http_request, sdp_offer, status_code};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub(crate) type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The browser's made-up host (JsSIP writes a random `.invalid` name).
pub(crate) const HOST: &str = "df7jal23ls0d.invalid";

pub(crate) async fn connect(
    port: u16,
    subprotocol: Option<&str>,
) -> Result<(Ws, Option<String>), String> {
    connect_url(&format!("ws://127.0.0.1:{port}"), subprotocol).await
}

/// A WebSocket to `url` offering `subprotocol`: the stream and the subprotocol chosen.
pub(crate) async fn connect_url(
    url: &str,
    subprotocol: Option<&str>,
) -> Result<(Ws, Option<String>), String> {
    let mut req = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    let chosen = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((ws, chosen))
}

pub(crate) async fn send(ws: &mut Ws, text: String) {
    ws.send(Message::text(text)).await.expect("ws send");
}

/// The next SIP message (text) within `timeout`.
pub(crate) async fn recv(ws: &mut Ws, timeout: Duration) -> String {
    loop {
        let m = tokio::time::timeout(timeout, ws.next())
            .await
            .expect("a message in time")
            .expect("connection open")
            .expect("ws message");
        match m {
            Message::Text(t) => return t.to_string(),
            Message::Binary(b) => return String::from_utf8_lossy(&b).into_owned(),
            _ => continue,
        }
    }
}

/// Receives until a message starting with `prefix`.
pub(crate) async fn recv_until(ws: &mut Ws, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = recv(ws, deadline.saturating_duration_since(Instant::now())).await;
        if m.starts_with(prefix) {
            return m;
        }
    }
}

pub(crate) fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn options(n: u32, content_length: bool) -> String {
    format!(
        "OPTIONS sip:voxline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS {HOST};branch=z9hG4bK-ws{n}\r\n\
         Max-Forwards: 69\r\nTo: <sip:voxline@127.0.0.1>\r\nFrom: <sip:alice@example.com>;tag=o{n}\r\n\
         Call-ID: ws-options-{n}\r\nCSeq: {n} OPTIONS\r\n{}\r\n",
        if content_length {
            "Content-Length: 0\r\n"
        } else {
            ""
        }
    )
}

fn invite(sdp: &str) -> String {
    format!(
        "INVITE sip:echo@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS {HOST};branch=z9hG4bK-wsinv\r\n\
         Max-Forwards: 69\r\nTo: <sip:echo@127.0.0.1>\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=wsa\r\n\
         Call-ID: ws-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:u7x2@{HOST};transport=ws;ob>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn ack(to: &str) -> String {
    format!(
        "ACK sip:voxline@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS {HOST};branch=z9hG4bK-wsack\r\n\
         Max-Forwards: 69\r\nTo: {to}\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=wsa\r\n\
         Call-ID: ws-call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The 200 OK to a request from voxline.
pub(crate) fn ok_to(req: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
        for l in req.lines() {
            if l.split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            {
                out.push_str(l);
                out.push_str("\r\n");
            }
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The id of the one call in `GET /calls`.
pub(crate) fn the_call_id(vox: &VoxlineProcess) -> u64 {
    let (_, calls) = http_get(vox.http_addr(), "/calls", Duration::from_secs(5)).expect("calls");
    calls
        .split("\"id\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no call in {calls}"))
}

pub(crate) fn voxline(ws_port: u16) -> VoxlineProcess {
    VoxlineProcess::spawn(&format!("[sip]\nws_listen = [\"127.0.0.1:{ws_port}\"]\n"))
}

#[tokio::test]
async fn the_handshake_needs_the_sip_subprotocol() {
    let port = free_tcp_port();
    let mut vox = voxline(port);
    let (mut ws, chosen) = connect(port, Some("sip")).await.expect("handshake");
    assert_eq!(chosen.as_deref(), Some("sip"));
    send(&mut ws, options(1, true)).await;
    let resp = recv(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(status_code(&resp), Some(200), "{resp}");
    assert_eq!(header(&resp, "CSeq"), Some("1 OPTIONS"));

    // Without Content-Length (optional over WebSocket), and a keepalive.
    send(&mut ws, options(2, false)).await;
    let resp = recv(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(status_code(&resp), Some(200), "{resp}");
    send(&mut ws, "\r\n\r\n".to_owned()).await;
    assert_eq!(recv(&mut ws, Duration::from_secs(5)).await, "\r\n");

    let refused = connect(port, None).await.expect_err("refused");
    assert!(refused.contains("400"), "{refused}");
    let refused = connect(port, Some("chat")).await.expect_err("refused");
    assert!(refused.contains("400"), "{refused}");
    let (_, metrics) =
        http_get(vox.http_addr(), "/metrics", Duration::from_secs(5)).expect("metrics");
    assert!(
        metrics.contains("voxline_sip_ws_failed_total 2"),
        "{metrics}"
    );
    vox.assert_running();
}

#[tokio::test]
async fn the_http_listener_serves_sip_over_websocket_at_slash_sip() {
    let mut vox = VoxlineProcess::spawn("");
    let url = format!("ws://{}/sip", vox.http_addr());
    let (mut ws, chosen) = connect_url(&url, Some("sip")).await.expect("handshake");
    assert_eq!(chosen.as_deref(), Some("sip"));
    send(&mut ws, options(7, true)).await;
    let resp = recv(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(status_code(&resp), Some(200), "{resp}");
    let refused = connect_url(&url, Some("chat")).await.expect_err("refused");
    assert!(refused.contains("400"), "{refused}");
    let (_, metrics) =
        http_get(vox.http_addr(), "/metrics", Duration::from_secs(5)).expect("metrics");
    assert!(
        metrics.contains("voxline_sip_ws_failed_total 1"),
        "{metrics}"
    );
    vox.assert_running();
}

#[tokio::test]
async fn a_browser_style_call_is_answered_and_hung_up_over_its_connection() {
    let port = free_tcp_port();
    let mut vox = voxline(port);
    let (mut ws, _) = connect(port, Some("sip")).await.expect("handshake");
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("rtp socket");
    rtp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let media_port = rtp.local_addr().expect("addr").port();
    send(&mut ws, invite(&sdp_offer(media_port))).await;
    let ok = recv_until(&mut ws, "SIP/2.0 200").await;
    assert!(
        header(&ok, "Contact").is_some_and(|c| c.contains("transport=ws")),
        "{ok}"
    );
    assert!(
        header(&ok, "Via").is_some_and(|v| v.contains(HOST)),
        "the response goes back on the connection, Via untouched: {ok}"
    );
    let to = header(&ok, "To").expect("To").to_owned();
    send(&mut ws, ack(&to)).await;

    // Media: RTP to the answer's address comes back from the echo agent.
    let body = ok.split("\r\n\r\n").nth(1).unwrap_or_default();
    let port_line = body
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .expect("m=audio");
    let their_port: u16 = port_line.split(' ').next().unwrap().parse().unwrap();
    let dest: SocketAddr = format!("127.0.0.1:{their_port}").parse().unwrap();
    let mut echoed = 0;
    for seq in 0u16..60 {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        p.extend_from_slice(&[0x55; 160]);
        rtp.send_to(&p, dest).expect("send rtp");
        let mut buf = [0u8; 1500];
        if let Ok((n, _)) = rtp.recv_from(&mut buf)
            && n > 12
            && buf[12..n].iter().filter(|b| **b == 0x55).count() > 100
        {
            echoed += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(echoed > 10, "the echo came back in {echoed} packets");

    // Hang up through the API: the BYE reaches the browser over the WebSocket.
    let id = the_call_id(&vox);
    let (code, _) = http_request(
        vox.http_addr(),
        "POST",
        &format!("/calls/{id}/hangup"),
        None,
        Duration::from_secs(5),
    )
    .expect("hangup");
    assert_eq!(code, 200);
    let bye = recv_until(&mut ws, "BYE ").await;
    assert!(
        bye.starts_with(&format!("BYE sip:u7x2@{HOST};transport=ws;ob SIP/2.0")),
        "{bye}"
    );
    assert!(
        header(&bye, "Via").is_some_and(|v| v.starts_with("SIP/2.0/WS ")),
        "{bye}"
    );
    send(&mut ws, ok_to(&bye)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, call) = http_get(
            vox.http_addr(),
            &format!("/calls/{id}"),
            Duration::from_secs(5),
        )
        .expect("call");
        if call.contains("\"state\":\"ended\"") {
            assert!(call.contains("\"end_reason\":\"LocalBye\""), "{call}");
            break;
        }
        assert!(Instant::now() < deadline, "the call did not end: {call}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    vox.assert_running();
}

#[tokio::test]
async fn a_closed_connection_ends_its_call() {
    let port = free_tcp_port();
    let mut vox = voxline(port);
    let (mut ws, _) = connect(port, Some("sip")).await.expect("handshake");
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("rtp socket");
    send(
        &mut ws,
        invite(&sdp_offer(rtp.local_addr().unwrap().port())),
    )
    .await;
    let ok = recv_until(&mut ws, "SIP/2.0 200").await;
    send(&mut ws, ack(header(&ok, "To").expect("To"))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = the_call_id(&vox);
    drop(ws);
    // No BYE can reach the browser: the call ends at once, not at the RTP timeout (30 s).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, call) = http_get(
            vox.http_addr(),
            &format!("/calls/{id}"),
            Duration::from_secs(5),
        )
        .expect("call");
        if call.contains("\"state\":\"ended\"") {
            assert!(
                call.contains("\"end_reason\":\"ConnectionClosed\""),
                "{call}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the call did not end: {call}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    vox.assert_running();
}

/// A WSS connection to `localhost:port` offering `sip`, trusting only the CA in `ca`.
async fn wss(
    port: u16,
    ca: &std::path::Path,
) -> Result<
    (
        Ws,
        tokio_tungstenite::tungstenite::handshake::client::Response,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("wss://localhost:{port}")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    let tls = voxline::runtime::tls::client_config(Some(ca), None).expect("client tls");
    tokio_tungstenite::connect_async_tls_with_config(
        req,
        None,
        false,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    )
    .await
}

#[tokio::test]
async fn wss_verifies_voxlines_certificate_and_carries_sip() {
    let certs = crate::tls::TestCerts::new(&["localhost", "127.0.0.1"]);
    let port = free_tcp_port();
    let mut vox = VoxlineProcess::spawn(&format!(
        "[sip]\nwss_listen = [\"127.0.0.1:{port}\"]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        certs.cert.display(),
        certs.key.display()
    ));
    let (mut ws, resp) = wss(port, &certs.ca).await.expect("WSS handshake");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("sip")
    );
    send(
        &mut ws,
        options(9, true).replace("SIP/2.0/WS ", "SIP/2.0/WSS "),
    )
    .await;
    let resp = recv(&mut ws, Duration::from_secs(5)).await;
    assert_eq!(status_code(&resp), Some(200), "{resp}");

    // A client that trusts another CA refuses voxline's certificate.
    let other = crate::tls::TestCerts::new(&["localhost"]);
    let refused = wss(port, &other.ca).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA was accepted"
    );
    vox.assert_running();
}
