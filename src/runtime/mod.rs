//! Tokio glue: sockets, timers, DNS. The only layer that reads the clock.
//!
//! One driver task owns the [`SipStack`](crate::sip::SipStack) and the
//! [`CallManager`](crate::call::CallManager). Socket tasks hand it received bytes through a
//! bounded channel; it feeds them in, drains `poll_output`, writes the transmits and sleeps
//! until the earliest deadline. Commands from the HTTP API and the CLI arrive on a second
//! bounded channel. Nothing holds a lock across an `.await`.

pub mod dns;
mod driver;
mod net;
pub mod recorder;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::call::{AgentSpec, CallTable, MediaPolicy, OutboundResult, PortAllocator, Routes};
use crate::sip::auth::Credentials;
use crate::sip::resolve::{SipTarget, TargetTransport};
use crate::sip::{CallHandle, Peer, StackConfig, Transport};

pub use driver::Command;

/// Capacity of the channel from socket tasks to the driver. UDP datagrams beyond it are
/// dropped and counted (the peer retransmits); TCP readers wait (backpressure).
pub const INBOUND_QUEUE: usize = 8192;
/// Capacity of the command channel.
pub const COMMAND_QUEUE: usize = 256;
/// Capacity of each TCP connection's write queue.
pub const TCP_WRITE_QUEUE: usize = 1024;
/// How long graceful shutdown waits for BYEs and un-REGISTERs to be answered.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A registration to keep up (from a trunk with `register = true`).
#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    /// Trunk name, for logs.
    pub name: String,
    /// Registrar host (name or IP) and port.
    pub host: String,
    /// Port, if fixed.
    pub port: Option<u16>,
    /// Transport.
    pub transport: Transport,
    /// The AOR user.
    pub user: String,
    /// The AOR domain (defaults to the host).
    pub domain: String,
    /// Credentials.
    pub credentials: Option<Credentials>,
    /// Requested expiry.
    pub expires: u32,
    /// Outbound proxy URI, if any.
    pub outbound_proxy: Option<String>,
}

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
    /// Send OPTIONS to the trunk this often (keepalive / qualify).
    pub options_keepalive: Option<Duration>,
}

/// Everything the runtime needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// SIP stack settings (listen addresses are taken from `udp_listen` / `tcp_listen`).
    pub stack: StackConfig,
    /// UDP listen addresses.
    pub udp_listen: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp_listen: Vec<SocketAddr>,
    /// CRLF keepalive interval on TCP connections we opened (RFC 5626 §3.5.1).
    pub tcp_keepalive: Option<Duration>,
    /// Routing of called numbers.
    pub routes: Routes,
    /// Media policy.
    pub media: MediaPolicy,
    /// RTP port range.
    pub rtp_ports: (u16, u16),
    /// Registrations.
    pub registrations: Vec<RegistrationSpec>,
    /// Trunks for outbound calls.
    pub trunks: Vec<TrunkSpec>,
    /// Our SIP domain for From URIs without a trunk.
    pub domain: Option<String>,
}

/// Counters the runtime keeps besides the stack's.
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    /// UDP datagrams dropped because the driver queue was full.
    pub inbound_dropped: AtomicU64,
    /// Datagrams that could not be sent.
    pub send_errors: AtomicU64,
}

/// Errors starting the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A socket could not be bound.
    #[error("cannot listen on {transport} {addr}: {source}")]
    Bind {
        /// Transport.
        transport: Transport,
        /// Address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Nothing to listen on.
    #[error("no SIP listen address configured")]
    NoListener,
    /// The driver stopped.
    #[error("the SIP driver has stopped")]
    Stopped,
    /// A dial target could not be resolved.
    #[error("cannot resolve {target}: {reason}")]
    Resolve {
        /// The target.
        target: String,
        /// Why.
        reason: String,
    },
}

/// A cheap handle to a running voxline: place and end calls, read the call table.
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::Sender<Command>,
    /// The shared call table.
    pub calls: CallTable,
    /// The bound SIP addresses (UDP first).
    pub sip_addrs: Arc<Vec<(Transport, SocketAddr)>>,
    /// Counters.
    pub counters: Arc<RuntimeCounters>,
    trunks: Arc<Vec<TrunkSpec>>,
    domain: Option<String>,
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

impl Handle {
    /// Places an outbound call; resolves the target (RFC 3263) first. Returns the call handle
    /// and a receiver that learns how the call ended.
    pub async fn dial(
        &self,
        req: DialRequest,
    ) -> Result<(CallHandle, oneshot::Receiver<OutboundResult>), RuntimeError> {
        let target = SipTarget::from_uri(&req.target).map_err(|e| RuntimeError::Resolve {
            target: req.target.clone(),
            reason: e.to_string(),
        })?;
        let trunk = match &req.trunk {
            Some(name) => self.trunks.iter().find(|t| &t.name == name).cloned(),
            None => self
                .trunks
                .iter()
                .find(|t| t.host.eq_ignore_ascii_case(&target.host))
                .cloned(),
        };
        let resolved = dns::resolve(&target)
            .await
            .map_err(|e| RuntimeError::Resolve {
                target: req.target.clone(),
                reason: e.to_string(),
            })?;
        let peers: Vec<Peer> = resolved
            .as_slice()
            .iter()
            .map(|c| Peer {
                transport: match c.transport {
                    TargetTransport::Udp => Transport::Udp,
                    TargetTransport::Tcp => Transport::Tcp,
                },
                addr: c.addr,
            })
            .collect();
        if peers.is_empty() {
            return Err(RuntimeError::Resolve {
                target: req.target,
                reason: "no addresses".into(),
            });
        }
        let (tx, rx) = oneshot::channel();
        let (htx, hrx) = oneshot::channel();
        let domain = self.domain.clone();
        self.commands
            .send(Command::Dial {
                target: req.target,
                peers,
                trunk,
                agent: req.agent,
                domain,
                notify: tx,
                reply: htx,
            })
            .await
            .map_err(|_| RuntimeError::Stopped)?;
        let handle = hrx
            .await
            .map_err(|_| RuntimeError::Stopped)?
            .map_err(|reason| RuntimeError::Resolve {
                target: String::new(),
                reason,
            })?;
        Ok((handle, rx))
    }

    /// Hangs up a call. Returns false if there was no such call.
    pub async fn hangup(&self, call: CallHandle) -> Result<bool, RuntimeError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Hangup { call, reply: tx })
            .await
            .map_err(|_| RuntimeError::Stopped)?;
        rx.await.map_err(|_| RuntimeError::Stopped)
    }

    /// Starts graceful shutdown: BYE every call, un-REGISTER, then stop. Resolves when done.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .commands
            .send(Command::Shutdown { done: tx })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Stack counters, read through the driver.
    pub async fn stack_counters(&self) -> Option<crate::sip::StackCounters> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Counters { reply: tx })
            .await
            .ok()?;
        rx.await.ok()
    }
}

/// Binds the sockets and starts the driver. Returns a handle and the driver's join handle.
pub async fn start(opts: Options) -> Result<(Handle, tokio::task::JoinHandle<()>), RuntimeError> {
    if opts.udp_listen.is_empty() && opts.tcp_listen.is_empty() {
        return Err(RuntimeError::NoListener);
    }
    let counters = Arc::new(RuntimeCounters::default());
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let mut bound = Vec::new();
    let mut udp_sockets = Vec::new();
    for addr in &opts.udp_listen {
        let sock =
            tokio::net::UdpSocket::bind(addr)
                .await
                .map_err(|source| RuntimeError::Bind {
                    transport: Transport::Udp,
                    addr: *addr,
                    source,
                })?;
        let local = sock.local_addr().map_err(|source| RuntimeError::Bind {
            transport: Transport::Udp,
            addr: *addr,
            source,
        })?;
        bound.push((Transport::Udp, local));
        udp_sockets.push(Arc::new(sock));
    }
    for addr in &opts.tcp_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| RuntimeError::Bind {
                transport: Transport::Tcp,
                addr: *addr,
                source,
            })?;
        let local = listener.local_addr().map_err(|source| RuntimeError::Bind {
            transport: Transport::Tcp,
            addr: *addr,
            source,
        })?;
        bound.push((Transport::Tcp, local));
        tokio::spawn(net::accept_loop(listener, in_tx.clone(), opts.stack.limits));
    }
    for sock in &udp_sockets {
        tokio::spawn(net::udp_recv_loop(
            sock.clone(),
            in_tx.clone(),
            counters.clone(),
        ));
    }
    let mut stack_cfg = opts.stack.clone();
    stack_cfg.listen = bound.clone();
    let table: CallTable = Default::default();
    let handle = Handle {
        commands: cmd_tx,
        calls: table.clone(),
        sip_addrs: Arc::new(bound),
        counters: counters.clone(),
        trunks: Arc::new(opts.trunks.clone()),
        domain: opts.domain.clone(),
    };
    let calls = crate::call::CallManager::new(
        opts.routes.clone(),
        opts.media.clone(),
        PortAllocator::new(opts.rtp_ports.0, opts.rtp_ports.1),
        table,
    );
    let driver = driver::Driver::new(
        stack_cfg,
        calls,
        udp_sockets,
        in_tx,
        counters,
        opts.tcp_keepalive,
    );
    let regs = opts.registrations.clone();
    let keepalives: Vec<TrunkSpec> = opts
        .trunks
        .iter()
        .filter(|t| t.options_keepalive.is_some())
        .cloned()
        .collect();
    let join = tokio::spawn(driver.run(in_rx, cmd_rx, regs, keepalives));
    Ok((handle, join))
}

/// The local IP the OS would use to reach `dest` (no packet is sent).
pub fn local_ip_towards(dest: SocketAddr) -> Option<IpAddr> {
    let bind = if dest.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    s.connect(dest).ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// Monotonic counter helper.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
