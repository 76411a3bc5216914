//! The call layer's front door for the HTTP API and the CLI: place calls, hang up, transfer,
//! shut down.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::{AgentSpec, CallCommand, CallTable, OutboundResult, TransferError, TransferOutcome};
use crate::runtime::{Commands, RuntimeError, dns, local_ip_towards};
use crate::sip::auth::Credentials;
use crate::sip::resolve::{ResolveError, SipTarget, TargetTransport};
use crate::sip::{CallHandle, OutgoingCall, Peer, Transport};

/// A trunk usable for outbound calls.
#[derive(Debug, Clone)]
pub struct TrunkSpec {
    /// Name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: Option<u16>,
    /// Transport.
    pub transport: Transport,
    /// Credentials for 401/407.
    pub credentials: Option<Credentials>,
    /// From user.
    pub from_user: Option<String>,
    /// From domain.
    pub from_domain: Option<String>,
    /// Outbound proxy URI.
    pub outbound_proxy: Option<String>,
}

/// A dial request.
#[derive(Debug, Clone)]
pub struct DialRequest {
    /// Target URI (`sip:1000@pbx.example.com`).
    pub target: String,
    /// Trunk to use for credentials and From, by name; or the trunk whose host matches.
    pub trunk: Option<String>,
    /// Agent.
    pub agent: AgentSpec,
}

/// Why a dial failed before the INVITE went out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The target is not a SIP URI voxline can call (no host, a host that is not a name or
    /// an address).
    #[error("invalid target {target}: {reason}")]
    InvalidTarget {
        /// The target.
        target: String,
        /// Why.
        reason: String,
    },
    /// The target's host has no SIP address: no such name, no A/AAAA records, or an SRV
    /// answer saying SIP is not offered there.
    #[error("cannot call {target}: {reason}")]
    NoSuchHost {
        /// The target.
        target: String,
        /// Why.
        reason: String,
    },
    /// The target could not be resolved (the DNS failed).
    #[error("cannot resolve {target}: {reason}")]
    Resolve {
        /// The target.
        target: String,
        /// Why.
        reason: String,
    },
    /// No such trunk.
    #[error("no trunk named {0:?}")]
    UnknownTrunk(String),
    /// The call could not be set up: no RTP port or no file descriptor.
    #[error("cannot place the call: {0}")]
    Setup(#[from] crate::runtime::rtp::RtpPortError),
    /// The trunk is at its `max_calls` or `max_calls_per_s`: try again shortly.
    #[error("{0}")]
    TrunkBusy(String),
    /// The runtime has stopped.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// How long [`CallService::transfer`] waits for the final outcome of a transfer: the REFER's
/// response and the final NOTIFY. 32 s is RFC 3261's Timer F (64·T1, §17.1.2.2), the time a
/// non-INVITE transaction (the REFER) may take; a transferee that accepted the REFER but sends
/// no final NOTIFY within it is given up on.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(32);

/// Why [`CallService::transfer`] did not return an outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferRequestError {
    /// The call layer refused or the transferee rejected the transfer.
    #[error(transparent)]
    Transfer(#[from] TransferError),
    /// No final outcome within [`TRANSFER_TIMEOUT`]. The call stays up; a new transfer may be
    /// requested.
    #[error("no final transfer outcome within {} s", TRANSFER_TIMEOUT.as_secs())]
    TimedOut,
    /// The runtime has stopped.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A cheap, cloneable handle on the call layer.
#[derive(Clone)]
pub struct CallService {
    commands: Commands<CallCommand>,
    /// The shared call table.
    pub calls: CallTable,
    trunks: Arc<Vec<TrunkSpec>>,
    domain: Option<String>,
}

impl CallService {
    /// A service sending to the driver through `commands`.
    pub fn new(
        commands: Commands<CallCommand>,
        calls: CallTable,
        trunks: Vec<TrunkSpec>,
        domain: Option<String>,
    ) -> Self {
        CallService {
            commands,
            calls,
            trunks: Arc::new(trunks),
            domain,
        }
    }

    /// The trunk of this name, if there is one.
    pub fn trunk(&self, name: &str) -> Option<&TrunkSpec> {
        self.trunks.iter().find(|t| t.name == name)
    }

    /// Places an outbound call; resolves the target (RFC 3263) first. Returns the call handle
    /// and a receiver that learns how the call ended.
    pub async fn dial(
        &self,
        req: DialRequest,
    ) -> Result<(CallHandle, oneshot::Receiver<OutboundResult>), DialError> {
        let resolve_err = |reason: String| DialError::Resolve {
            target: req.target.clone(),
            reason,
        };
        let target = SipTarget::from_uri(&req.target).map_err(|e| DialError::InvalidTarget {
            target: req.target.clone(),
            reason: e.to_string(),
        })?;
        let trunk = match &req.trunk {
            Some(name) => Some(
                self.trunks
                    .iter()
                    .find(|t| &t.name == name)
                    .cloned()
                    .ok_or_else(|| DialError::UnknownTrunk(name.clone()))?,
            ),
            None => self
                .trunks
                .iter()
                .find(|t| t.host.eq_ignore_ascii_case(&target.host))
                .cloned(),
        };
        let resolved = dns::resolve(&target).await.map_err(|e| match e {
            ResolveError::NoAddresses(_) | ResolveError::ServiceUnavailable(_) => {
                DialError::NoSuchHost {
                    target: req.target.clone(),
                    reason: e.to_string(),
                }
            }
            _ => resolve_err(e.to_string()),
        })?;
        let peers: Vec<Peer> = resolved
            .as_slice()
            .iter()
            .map(|c| Peer {
                transport: match c.transport {
                    TargetTransport::Udp => Transport::Udp,
                    TargetTransport::Tcp => Transport::Tcp,
                    TargetTransport::Tls => Transport::Tls,
                },
                addr: c.addr,
            })
            .collect();
        let Some((first, rest)) = peers.split_first() else {
            return Err(resolve_err("no addresses".into()));
        };
        let local_ip = local_ip_towards(first.addr).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let from_user = trunk
            .as_ref()
            .and_then(|t| {
                t.from_user
                    .clone()
                    .or_else(|| t.credentials.as_ref().map(|c| c.username.clone()))
            })
            .unwrap_or_else(|| "voxline".into());
        let from_host = trunk
            .as_ref()
            .map(|t| t.from_domain.clone().unwrap_or_else(|| t.host.clone()))
            .or_else(|| self.domain.clone())
            .unwrap_or_else(|| local_ip.to_string());
        let routes = trunk
            .as_ref()
            .and_then(|t| t.outbound_proxy.as_deref())
            .map(|p| vec![format!("<{}>", crate::runtime::with_lr(p))])
            .unwrap_or_default();
        let spec = OutgoingCall {
            request_uri: req.target.clone(),
            from_uri: format!("sip:{from_user}@{from_host}"),
            from_display: None,
            to_uri: req.target.clone(),
            next_hop: *first,
            routes,
            body: None,
            credentials: trunk.as_ref().and_then(|t| t.credentials.clone()),
            local_ip: Some(local_ip),
            extra_headers: Vec::new(),
            options: None,
        };
        let (notify, done) = oneshot::channel();
        let (reply, handle) = oneshot::channel();
        self.commands
            .send(CallCommand::Dial {
                spec,
                failover: rest.to_vec(),
                agent: req.agent,
                trunk: trunk.as_ref().map(|t| t.name.clone()),
                notify,
                reply,
            })
            .await?;
        let handle = handle.await.map_err(|_| RuntimeError::Stopped)??;
        Ok((handle, done))
    }

    /// Starts draining (see [`CallCommand::Drain`]).
    pub async fn drain(&self, retry_after_s: u32) -> Result<(), RuntimeError> {
        self.commands
            .send(CallCommand::Drain { retry_after_s })
            .await?;
        Ok(())
    }

    /// Hangs up every call in progress (a drain's deadline); how many there were.
    pub async fn hangup_all(&self) -> usize {
        let active = self.calls.active();
        for c in &active {
            let _ = self.hangup(CallHandle(c.id)).await;
        }
        active.len()
    }

    /// Hangs up a call. Returns false if there was no such call.
    pub async fn hangup(&self, call: CallHandle) -> Result<bool, RuntimeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(CallCommand::Hangup { call, reply })
            .await?;
        rx.await.map_err(|_| RuntimeError::Stopped)
    }

    /// The SIP stack's counters, read through the driver (`None` once it has stopped).
    pub async fn stack_counters(&self) -> Option<crate::sip::StackCounters> {
        self.commands.stack_counters().await
    }

    /// Sends DTMF digits on a call: by `method`, else the way its trunk says (see
    /// [`super::TrunkPolicy::dtmf`]).
    pub async fn send_dtmf(
        &self,
        call: CallHandle,
        digits: Vec<crate::media::dtmf::Digit>,
        method: Option<super::DtmfSendMethod>,
    ) -> Result<Result<(), super::DtmfError>, RuntimeError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(CallCommand::SendDtmf {
                call,
                digits,
                method,
                reply,
            })
            .await?;
        rx.await.map_err(|_| RuntimeError::Stopped)
    }

    /// Blind transfer of an answered call to `target` (a `sip:`/`sips:`/`tel:` URI or a bare
    /// number, see [`super::TransferTarget::parse`]): sends REFER and waits, at most
    /// [`TRANSFER_TIMEOUT`], for the final outcome. On success voxline has hung up its leg.
    pub async fn transfer(
        &self,
        call: CallHandle,
        target: String,
    ) -> Result<TransferOutcome, TransferRequestError> {
        let (reply, rx) = oneshot::channel();
        let outcome = async {
            self.commands
                .send(CallCommand::Transfer {
                    call,
                    target,
                    reply,
                })
                .await?;
            let result = rx.await.map_err(|_| RuntimeError::Stopped)?;
            Ok(result?)
        };
        tokio::time::timeout(TRANSFER_TIMEOUT, outcome)
            .await
            .map_err(|_| TransferRequestError::TimedOut)?
    }

    /// Graceful shutdown: BYE every call, un-REGISTER, stop.
    pub async fn shutdown(&self) {
        self.commands.shutdown().await;
    }
}
