//! UAC registration (RFC 3261 §10): REGISTER with digest, refresh before expiry, learning the
//! public address from `received`/`rport`, and un-REGISTER on shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::RegistrationId;
use super::auth::{Credentials, DigestClient, select_challenge};
use super::message::{self, Msg};
use super::transport::Peer;

/// Refresh this long before the binding expires, for long bindings (RFC 3261 §10.2.4 leaves the
/// margin to the UA; 30 s rides out one retransmission cycle of Timer F).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(30);
/// First retry delay after a failed registration; doubles up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest retry delay.
pub const MAX_RETRY: Duration = Duration::from_secs(600);

/// What to register, where.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    /// Request-URI of the REGISTER: `sip:registrar.example.com[:port]`.
    pub registrar: String,
    /// The address of record, used in From and To: `sip:1000@pbx.example.com`.
    pub aor: String,
    /// User part of our Contact.
    pub contact_user: String,
    /// Credentials for digest challenges.
    pub credentials: Option<Credentials>,
    /// Requested binding lifetime in seconds.
    pub expires: u32,
    /// Where to send the REGISTER (registrar or outbound proxy).
    pub next_hop: Peer,
    /// Route values (an outbound proxy with `;lr`).
    pub routes: Vec<String>,
    /// Our address as we would advertise it before learning better.
    pub local_addr: SocketAddr,
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// A REGISTER is on its way.
    Registering,
    /// The registrar accepted the binding for this many seconds.
    Registered {
        /// Granted lifetime.
        expires: u32,
    },
    /// The registrar refused, or did not answer. Retried later.
    Failed {
        /// The final status (408 for a timeout).
        status: u16,
        /// Why.
        reason: String,
    },
    /// The binding was removed (Expires: 0 acknowledged).
    Unregistered,
}

/// What the stack must do after a response to a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationAction {
    /// Send a new REGISTER now (with credentials, or with a corrected Contact).
    SendAgain,
    /// Report a state change.
    Report(RegistrationState),
    /// Nothing to do.
    Nothing,
}

/// One registration binding.
#[derive(Debug)]
pub struct Registration {
    /// The handle.
    pub id: RegistrationId,
    /// The configuration.
    pub config: RegistrationConfig,
    /// Call-ID kept across refreshes (RFC 3261 §10.2.4).
    pub call_id: String,
    /// From tag.
    pub from_tag: String,
    /// Last CSeq used.
    pub cseq: u32,
    /// The state.
    pub state: RegistrationState,
    /// Digest state.
    pub digest: DigestClient,
    /// When to send the next REGISTER (refresh or retry).
    pub next_send: Option<Instant>,
    /// The Contact address the registrar saw (from `received`/`rport`).
    pub contact_addr: SocketAddr,
    /// True once un-registration was requested.
    pub unregistering: bool,
    auth_attempts: u32,
    retry: Duration,
    digest_is_proxy: bool,
}

impl Registration {
    /// A new registration, due to be sent at `now`.
    pub fn new(
        id: RegistrationId,
        config: RegistrationConfig,
        call_id: String,
        from_tag: String,
        now: Instant,
    ) -> Self {
        let contact_addr = config.local_addr;
        Registration {
            id,
            config,
            call_id,
            from_tag,
            cseq: 0,
            state: RegistrationState::Registering,
            digest: DigestClient::new(),
            next_send: Some(now),
            contact_addr,
            unregistering: false,
            auth_attempts: 0,
            retry: FIRST_RETRY,
            digest_is_proxy: false,
        }
    }

    /// The Contact value we register.
    pub fn contact(&self) -> String {
        let host = match self.contact_addr {
            SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        };
        let transport = self.config.next_hop.transport.uri_param();
        format!(
            "<sip:{}@{host};transport={transport}>",
            self.config.contact_user
        )
    }

    /// The Expires value of the next REGISTER.
    pub fn expires_to_send(&self) -> u32 {
        if self.unregistering {
            0
        } else {
            self.config.expires
        }
    }

    /// The Authorization header (name, value) for the next REGISTER, if a challenge is known.
    pub fn authorization(&mut self, cnonce: &str) -> Option<(&'static str, String)> {
        let creds = self.config.credentials.as_ref()?;
        let value =
            self.digest
                .authorization(creds, "REGISTER", &self.config.registrar, b"", cnonce)?;
        Some((
            if self.digest_is_proxy {
                "Proxy-Authorization"
            } else {
                "Authorization"
            },
            value,
        ))
    }

    /// Handles the final (or provisional) response to our REGISTER.
    pub fn handle_response(&mut self, now: Instant, msg: &Msg) -> RegistrationAction {
        let Some(code) = msg.status() else {
            return RegistrationAction::Nothing;
        };
        match code {
            100..=199 => RegistrationAction::Nothing,
            200..=299 => {
                self.auth_attempts = 0;
                self.retry = FIRST_RETRY;
                if self.unregistering {
                    self.next_send = None;
                    self.state = RegistrationState::Unregistered;
                    return RegistrationAction::Report(self.state.clone());
                }
                // Learn the address the registrar saw (RFC 3581 §4, RFC 3261 §18.2.1).
                if let (Some(ip), Some(Some(port))) = (msg.via.received, msg.via.rport) {
                    let seen = SocketAddr::new(ip, port);
                    if seen != self.contact_addr {
                        self.contact_addr = seen;
                        return RegistrationAction::SendAgain;
                    }
                } else if let Some(Some(port)) = msg.via.rport {
                    let seen = SocketAddr::new(self.contact_addr.ip(), port);
                    if seen != self.contact_addr {
                        self.contact_addr = seen;
                        return RegistrationAction::SendAgain;
                    }
                }
                let granted = self.granted_expires(msg).unwrap_or(self.config.expires);
                let granted_d = Duration::from_secs(u64::from(granted));
                let delay = if granted_d > REFRESH_MARGIN * 4 {
                    granted_d - REFRESH_MARGIN
                } else {
                    granted_d / 2
                };
                self.next_send = Some(now + delay.max(Duration::from_secs(1)));
                self.state = RegistrationState::Registered { expires: granted };
                RegistrationAction::Report(self.state.clone())
            }
            401 | 407 => {
                let header = if code == 401 {
                    "WWW-Authenticate"
                } else {
                    "Proxy-Authenticate"
                };
                let values: Vec<&str> = message::headers_named(msg.headers(), header).collect();
                let Some(challenge) = select_challenge(&values) else {
                    return self.fail(now, code, "unusable challenge");
                };
                if self.config.credentials.is_none() {
                    return self.fail(now, code, "challenged but no credentials are configured");
                }
                // A fresh challenge after we already answered one with a non-stale nonce means
                // the credentials are wrong: stop instead of looping (RFC 3261 §22.2). Stale
                // nonces are followed, but only `MAX_STALE_RETRIES` times in a row.
                if self.auth_attempts >= 1 && !self.digest.should_retry(&challenge, true) {
                    let why = if challenge.stale {
                        "too many stale nonces"
                    } else {
                        "credentials rejected"
                    };
                    return self.fail(now, code, why);
                }
                self.auth_attempts += 1;
                self.digest_is_proxy = code == 407;
                self.digest.set_challenge(challenge);
                RegistrationAction::SendAgain
            }
            423 => {
                // Interval Too Brief: retry with Min-Expires (RFC 3261 §10.2.8).
                match msg
                    .header("Min-Expires")
                    .and_then(|v| v.trim().parse::<u32>().ok())
                {
                    Some(min) if min > self.config.expires => {
                        self.config.expires = min;
                        RegistrationAction::SendAgain
                    }
                    _ => self.fail(now, code, "423 without a usable Min-Expires"),
                }
            }
            _ => {
                let reason = msg
                    .response()
                    .map(|r| r.status_code.to_string())
                    .unwrap_or_default();
                self.fail(now, code, &reason)
            }
        }
    }

    /// The connection the REGISTER went on failed or closed before an answer (a refused TLS
    /// handshake, a reset): a 503, as RFC 3261 §8.1.3.1 counts a transport error.
    pub fn handle_transport_failure(&mut self, now: Instant) -> RegistrationAction {
        self.fail(now, 503, "the connection to the registrar failed or closed")
    }

    /// The REGISTER timed out (Timer F).
    pub fn handle_timeout_failure(&mut self, now: Instant) -> RegistrationAction {
        self.fail(now, 408, "no response from registrar")
    }

    fn fail(&mut self, now: Instant, status: u16, reason: &str) -> RegistrationAction {
        self.auth_attempts = 0;
        if self.unregistering {
            self.next_send = None;
            self.state = RegistrationState::Unregistered;
            return RegistrationAction::Report(self.state.clone());
        }
        self.next_send = Some(now + self.retry);
        self.retry = (self.retry * 2).min(MAX_RETRY);
        self.state = RegistrationState::Failed {
            status,
            reason: reason.to_string(),
        };
        RegistrationAction::Report(self.state.clone())
    }

    /// The lifetime granted: our Contact's `expires` param, else the Expires header.
    fn granted_expires(&self, msg: &Msg) -> Option<u32> {
        let ours = format!("@{}", self.contact_addr);
        for c in message::headers_named(msg.headers(), "Contact").flat_map(message::split_list) {
            if message::uri_of(c).contains(&ours)
                && let Some(e) = message::param(c, "expires").and_then(|v| v.parse().ok())
            {
                return Some(e);
            }
        }
        msg.header("Expires").and_then(|v| v.trim().parse().ok())
    }
}
