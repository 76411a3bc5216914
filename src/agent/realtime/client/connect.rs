//! Opening a session: the TCP/TLS connection, the WebSocket upgrade done by hand (so no
//! library logs the Authorization header), and `session.update` until the server confirms.

use super::*;

// ---------------------------------------------------------------------------------------
// Connection setup.

pub(super) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where to connect, from the URL (with `model=` added).
#[derive(Debug)]
pub(super) struct Target {
    /// `host:port`, for messages.
    pub(super) host: String,
    /// The host to resolve and to name in TLS (no IPv6 brackets).
    pub(super) connect_host: String,
    pub(super) port: u16,
    pub(super) tls: bool,
    /// The `Host` header (port only when not the scheme's default).
    pub(super) host_header: String,
    /// The request target.
    pub(super) path_and_query: String,
}

impl Target {
    pub(super) fn new(cfg: &RealtimeConfig) -> Result<Target, BackendError> {
        let mut url = url::Url::parse(&cfg.url)
            .map_err(|e| BackendError::Config(format!("bad realtime URL: {e}")))?;
        let tls = match url.scheme() {
            "wss" => true,
            "ws" => false,
            other => {
                return Err(BackendError::Config(format!(
                    "realtime URL must be ws:// or wss://, not {other}://"
                )));
            }
        };
        let connect_host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(BackendError::Config("realtime URL has no host".into())),
        };
        let host_str = url.host_str().unwrap_or_default().to_owned();
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        let host_header = match url.port() {
            Some(p) => format!("{host_str}:{p}"),
            None => host_str.clone(),
        };
        let has_model = url
            .query_pairs()
            .any(|(k, _)| k == "model" || k == "deployment");
        if !has_model {
            url.query_pairs_mut().append_pair("model", &cfg.model);
        }
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

/// What (re)connecting needs.
pub(super) struct Setup {
    pub(super) target: Target,
    pub(super) api_key: ApiKey,
    pub(super) session_json: String,
    pub(super) azure: bool,
    pub(super) connect_timeout: Duration,
    pub(super) reconnect: bool,
    pub(super) reconnect_budget: Duration,
}

/// Connects, sends `session.update` and waits for `session.updated`; each of the two steps
/// gets `limit`.
pub(super) async fn open_session(setup: &Setup, limit: Duration) -> Result<Ws, BackendError> {
    let (name, value) = if setup.azure {
        ("api-key", setup.api_key.expose().to_owned())
    } else {
        (
            "Authorization",
            format!("Bearer {}", setup.api_key.expose()),
        )
    };
    if !value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(BackendError::Config(
            "the API key is not a valid header value".into(),
        ));
    }
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let dialed = tokio::time::timeout(limit, dial(&setup.target, name, &value)).await;
    let mut ws = match dialed {
        Err(_) => {
            return Err(BackendError::Timeout {
                stage: "realtime connect",
                after_ms: limit_ms,
            });
        }
        Ok(r) => r?,
    };
    debug!(host = %setup.target.host, "realtime socket open; sending session.update");
    ws.send(Message::Text(setup.session_json.clone().into()))
        .await
        .map_err(|e| BackendError::Protocol(format!("cannot send session.update: {e}")))?;

    let deadline = Instant::now() + limit;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => {
                return Err(BackendError::Timeout {
                    stage: "realtime session.updated",
                    after_ms: limit_ms,
                });
            }
            Ok(None) => {
                return Err(BackendError::Protocol(
                    "connection closed before session.updated".into(),
                ));
            }
            Ok(Some(Err(e))) => return Err(BackendError::Protocol(e.to_string())),
            Ok(Some(Ok(m))) => m,
        };
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(frame) => {
                return Err(BackendError::Protocol(format!(
                    "server closed the connection during setup{}",
                    frame
                        .map(|f| format!(": {} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default()
                )));
            }
            _ => continue,
        };
        match ServerEvent::parse(text.as_str()) {
            Ok(ServerEvent::SessionUpdated { .. }) => return Ok(ws),
            Ok(ServerEvent::Error { error }) => {
                return Err(BackendError::SessionRejected(format!(
                    "{}{}",
                    error.message,
                    error
                        .param
                        .map(|p| format!(" (param {p})"))
                        .unwrap_or_default()
                )));
            }
            Ok(_) => {}
            Err(e) => debug!(error = %e, "realtime: unparsed event during setup"),
        }
    }
}

/// Largest HTTP response head accepted at upgrade time.
pub(super) const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Opens TCP (and TLS for `wss://`) and performs the WebSocket upgrade (RFC 6455 §4.1)
/// itself, so the request, which carries the key, never reaches a logger.
pub(super) async fn dial(
    target: &Target,
    auth_name: &str,
    auth_value: &str,
) -> Result<Ws, BackendError> {
    let connect_err = |reason: String| BackendError::Connect {
        host: target.host.clone(),
        reason,
    };
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
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n{auth_name}: {auth_value}\r\n\r\n",
        target.path_and_query, target.host_header
    );
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
pub(super) struct UpgradeResponse {
    pub(super) status: u16,
    /// Lower-cased names.
    pub(super) headers: Vec<(String, String)>,
}

impl UpgradeResponse {
    pub(super) fn parse(head: &str) -> Result<UpgradeResponse, BackendError> {
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

    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The TLS client configuration (Mozilla's roots via webpki-roots), built once.
pub(super) fn tls_config() -> Arc<rustls::ClientConfig> {
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

/// The `response.create` instructions for a greeting.
pub(super) fn greeting_instructions(greeting: &str) -> String {
    format!("Greet the caller now. Say exactly this and nothing else: {greeting}")
}

pub(super) async fn send(ws: &mut Ws, ev: &ClientEvent) -> Result<(), tungstenite::Error> {
    ws.send(Message::Text(ev.to_json().into())).await
}

/// Why a live session's connection ended from the far side (the client then reconnects if
/// allowed).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionLost {
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

/// The WebSocket settings: an 8 KiB read buffer instead of the library's 128 KiB, which it
/// zero-fills before every read (13 % of voxline's CPU with 200 realtime calls) and which was
/// most of the memory per call; events are a few KiB at most, larger frames still work (the
/// buffer only sets how much is read per system call).
pub(super) fn ws_config() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER)
}

/// Bytes read from the socket per read (see [`ws_config`]).
pub(super) const WS_READ_BUFFER: usize = 8 * 1024;
