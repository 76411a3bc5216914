//! Opening a session: the TCP/TLS connection, the WebSocket upgrade done by hand (so no
//! library logs the Authorization header), and `session.update` until the server confirms.

use super::*;

// ---------------------------------------------------------------------------------------
// Connection setup.

pub(super) use crate::agent::ws::{ConnectionLost, Target, Ws, dial};

/// Where to connect: the realtime URL with `model=` added.
pub(super) fn target(cfg: &RealtimeConfig) -> Result<Target, BackendError> {
    let mut url = url::Url::parse(&cfg.url)
        .map_err(|e| BackendError::Config(format!("bad realtime URL: {e}")))?;
    let has_model = url
        .query_pairs()
        .any(|(k, _)| k == "model" || k == "deployment");
    if !has_model {
        url.query_pairs_mut().append_pair("model", &cfg.model);
    }
    Target::new(&url, "realtime")
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
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
    let dialed = tokio::time::timeout(limit, dial(&setup.target, &[(name, &value)])).await;
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

/// The `response.create` instructions for a greeting.
pub(super) fn greeting_instructions(greeting: &str) -> String {
    format!("Greet the caller now. Say exactly this and nothing else: {greeting}")
}

pub(super) async fn send(ws: &mut Ws, ev: &ClientEvent) -> Result<(), tungstenite::Error> {
    ws.send(Message::Text(ev.to_json().into())).await
}
