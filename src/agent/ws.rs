//! WebSocket connections to AI providers, shared by the realtime and cascaded backends.
//!
//! [`dial`] opens TCP (and TLS for `wss://`) and performs the WebSocket upgrade (RFC 6455
//! §4.1) itself, so the request, which carries the provider's key, never reaches a logger
//! (tungstenite's own handshake logs the whole request at TRACE level). An HTTP status at
//! upgrade time becomes a typed [`BackendError`]: 401/403 [`BackendError::Unauthorized`],
//! 429 [`BackendError::RateLimited`] with its `Retry-After`, anything else
//! [`BackendError::Http`].

use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::backend::BackendError;

/// A client WebSocket over TCP or TLS.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Largest HTTP response head accepted at upgrade time.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Bytes read from the socket per read (see [`ws_config`]).
pub const WS_READ_BUFFER: usize = 8 * 1024;

/// Where to connect, from a `ws://` or `wss://` URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, for messages.
    pub host: String,
    /// The host to resolve and to name in TLS (no IPv6 brackets).
    pub connect_host: String,
    /// The TCP port.
    pub port: u16,
    /// `wss://`.
    pub tls: bool,
    /// The `Host` header (port only when not the scheme's default).
    pub host_header: String,
    /// The request target.
    pub path_and_query: String,
}

impl Target {
    /// The target of `url`; `what` names the provider in error messages.
    pub fn new(url: &url::Url, what: &str) -> Result<Target, BackendError> {
        let tls = match url.scheme() {
            "wss" => true,
            "ws" => false,
            other => {
                return Err(BackendError::Config(format!(
                    "{what} URL must be ws:// or wss://, not {other}://"
                )));
            }
        };
        let connect_host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(BackendError::Config(format!("{what} URL has no host"))),
        };
        let host_str = url.host_str().unwrap_or_default().to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let host_header = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.clone(),
        };
        let path_and_query = url[url::Position::BeforePath..url::Position::AfterQuery].to_owned();
        Ok(Target {
            host: format!("{host_str}:{port}"),
            connect_host,
            port,
            tls,
            host_header,
            path_and_query,
        })
    }
}

/// Checks that a header value can be sent as is (visible ASCII and tabs): an API key with a
/// newline in it would otherwise inject headers.
pub fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

/// Opens TCP (and TLS for `wss://`) and performs the WebSocket upgrade with the extra
/// `headers` (name, value).
pub async fn dial(target: &Target, headers: &[(&str, &str)]) -> Result<Ws, BackendError> {
    let connect_err = |reason: String| BackendError::Connect {
        host: target.host.clone(),
        reason,
    };
    for (_, v) in headers {
        if !valid_header_value(v) {
            return Err(BackendError::Config(
                "the API key is not a valid header value".into(),
            ));
        }
    }
    let tcp = TcpStream::connect((target.connect_host.as_str(), target.port))
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let mut stream = if target.tls {
        let name = ServerName::try_from(target.connect_host.clone())
            .map_err(|e| connect_err(format!("bad TLS server name: {e}")))?;
        let tls = TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| connect_err(format!("TLS: {e}")))?;
        MaybeTlsStream::Rustls(tls)
    } else {
        MaybeTlsStream::Plain(tcp)
    };

    let key = tungstenite::handshake::client::generate_key();
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n",
        target.path_and_query, target.host_header
    );
    for (name, value) in headers {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| connect_err(e.to_string()))?;

    // Read the response head; bytes after it already belong to the WebSocket.
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(BackendError::Protocol(
                "upgrade response head too long".into(),
            ));
        }
        let mut chunk = [0u8; 2048];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        if n == 0 {
            return Err(BackendError::Protocol(
                "connection closed during the WebSocket upgrade".into(),
            ));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let rest = buf.split_off(head_len);
    let head = String::from_utf8_lossy(&buf);
    let response = UpgradeResponse::parse(&head)?;
    match response.status {
        101 => {}
        401 | 403 => {
            return Err(BackendError::Unauthorized {
                status: response.status,
            });
        }
        429 => {
            return Err(BackendError::RateLimited {
                retry_after_s: response
                    .header("retry-after")
                    .and_then(|v| v.trim().parse().ok()),
            });
        }
        status => return Err(BackendError::Http { status }),
    }
    let upgrade_ok = response
        .header("upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let accept_ok = response.header("sec-websocket-accept").map(str::trim)
        == Some(tungstenite::handshake::derive_accept_key(key.as_bytes()).as_str());
    if !upgrade_ok || !accept_ok {
        return Err(BackendError::Protocol(
            "the server's 101 answer is not a valid WebSocket upgrade".into(),
        ));
    }
    Ok(WebSocketStream::from_partially_read(stream, rest, WsRole::Client, Some(ws_config())).await)
}

/// The status and headers of the upgrade response.
#[derive(Debug)]
pub struct UpgradeResponse {
    /// The HTTP status.
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
}

impl UpgradeResponse {
    /// Parses a response head (status line and headers).
    pub fn parse(head: &str) -> Result<UpgradeResponse, BackendError> {
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        let status = match (parts.next(), parts.next().and_then(|s| s.parse().ok())) {
            (Some(v), Some(status)) if v.starts_with("HTTP/1.") => status,
            _ => {
                return Err(BackendError::Protocol(format!(
                    "not an HTTP response: {:?}",
                    status_line.chars().take(80).collect::<String>()
                )));
            }
        };
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(UpgradeResponse { status, headers })
    }

    /// A header's value (`name` lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The TLS client configuration (Mozilla's roots via webpki-roots), built once.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let mut cfg = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(cfg)
        })
        .clone()
}

/// The WebSocket settings: an 8 KiB read buffer instead of the library's 128 KiB, which it
/// zero-fills before every read (13 % of voxline's CPU with 200 realtime calls) and which was
/// most of the memory per call; events are a few KiB at most, larger frames still work (the
/// buffer only sets how much is read per system call).
pub fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER)
}

/// Why a live connection ended from the far side.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionLost {
    /// The socket reached its end without a close frame.
    #[error("connection closed")]
    Ended,
    /// Reading or writing the WebSocket failed.
    #[error(transparent)]
    Socket(#[from] tungstenite::Error),
    /// The server sent a close frame.
    #[error("server closed the connection{}", .0.as_ref().map(|(code, reason)| format!(": {code} {reason}")).unwrap_or_default())]
    ClosedByServer(Option<(u16, String)>),
}

/// Closes a socket politely, waiting at most 500 ms for the peer.
pub async fn close(ws: &mut Ws) {
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), ws.close(None)).await;
}
