//! Tokio glue: sockets, timers, DNS. The only layer that reads the clock.
//!
//! One driver task owns the [`SipStack`](crate::sip::SipStack) and a [`CallHandler`] (the call
//! layer implements it). Socket tasks hand the driver received bytes through a bounded channel;
//! it feeds them in, drains `poll_output`, writes the transmits and sleeps until the earliest
//! deadline. Commands for the call layer arrive on a second bounded channel. Nothing holds a
//! lock across an `.await`. This module knows nothing of calls, agents or media policy: it
//! depends only on the cores.

pub mod dns;
mod driver;
pub use driver::ResolvedRegistration;
pub mod health;
pub(crate) mod media;
mod net;

pub use net::{TcpGate, TcpSlot};
pub mod recorder;
pub mod rtp;
pub mod tls;
pub mod ws;

pub use driver::with_lr;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::sip::auth::Credentials;
use crate::sip::{SipEvent, SipStack, StackConfig, StackCounters, Transport};

/// Capacity of the channel from socket tasks to the driver. UDP datagrams beyond it are
/// dropped and counted (the peer retransmits); TCP readers wait (backpressure).
pub const INBOUND_QUEUE: usize = 8192;
/// Capacity of the command channel.
pub const COMMAND_QUEUE: usize = 1024;
/// Capacity of each TCP connection's write queue.
pub const TCP_WRITE_QUEUE: usize = 1024;
/// How long graceful shutdown waits for BYEs and un-REGISTERs to be answered.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The call layer as the driver sees it. Every method runs on the driver task, synchronously:
/// it must not block.
pub trait CallHandler: Send + 'static {
    /// Commands from the API, the CLI, or the handler's own tasks.
    type Command: Send + 'static;
    /// The handler's part of a call's media, served by the media workers.
    type Media: media::MediaCall;
    /// Called once, before anything else: a sender for the handler's own tasks, the media
    /// workers (which stop once the handler and every call's media are gone) and the wall
    /// clock.
    fn attach(&mut self, attached: Attached<Self::Command, Self::Media>);
    /// A stack event.
    fn handle_event(&mut self, now: Instant, stack: &mut SipStack, event: SipEvent);
    /// A command.
    fn handle_command(&mut self, now: Instant, stack: &mut SipStack, command: Self::Command);
    /// The handler's next deadline.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Fires the handler's due deadlines.
    fn handle_timeout(&mut self, now: Instant, stack: &mut SipStack);
    /// Graceful shutdown: end every call.
    fn hangup_all(&mut self, now: Instant, stack: &mut SipStack);
    /// True when no call is left.
    fn is_idle(&self) -> bool;
}

/// What [`CallHandler::attach`] hands the call layer.
#[derive(Debug)]
#[non_exhaustive]
pub struct Attached<C, M: media::MediaCall> {
    /// Commands to the driver, for the handler's own tasks.
    pub commands: Commands<C>,
    /// The media workers.
    pub media: media::MediaPool<M>,
    /// The wall clock, as of the attach.
    pub wall: WallClock,
}

/// The wall clock at one monotonic instant, read by the runtime: the call layer turns the
/// `now` it is handed into wall time (call records, SDP session ids) without reading a clock.
/// A wall clock stepped later is not followed; calls are short next to that.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    unix: Duration,
}

impl WallClock {
    /// The wall clock was `unix` after the Unix epoch at `instant`.
    pub fn new(instant: Instant, unix: Duration) -> Self {
        Self { instant, unix }
    }

    /// Reads both clocks.
    fn read() -> Self {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self::new(Instant::now(), unix)
    }

    /// The instant it was read at.
    pub fn instant(&self) -> Instant {
        self.instant
    }

    /// Time since the Unix epoch at `now`.
    pub fn unix(&self, now: Instant) -> Duration {
        match now.checked_duration_since(self.instant) {
            Some(later) => self.unix.saturating_add(later),
            None => self
                .unix
                .saturating_sub(self.instant.saturating_duration_since(now)),
        }
    }
}

/// What the driver's command channel carries.
#[derive(Debug)]
pub enum Control<C> {
    /// For the call handler.
    App(C),
    /// Read the stack counters.
    Counters(oneshot::Sender<StackCounters>),
    /// Graceful shutdown; signalled when done.
    Shutdown(oneshot::Sender<()>),
    /// Start keeping up a registration (unless one for that trunk runs).
    Register(Box<driver::ResolvedRegistration>),
    /// Un-register the trunk of that name and stop refreshing it.
    Unregister(String),
}

/// A sender of commands to the driver (cheap to clone).
#[derive(Debug)]
pub struct Commands<C> {
    tx: mpsc::Sender<Control<C>>,
}

impl<C> Clone for Commands<C> {
    fn clone(&self) -> Self {
        Commands {
            tx: self.tx.clone(),
        }
    }
}

impl<C: Send + 'static> Commands<C> {
    /// Sends a command, waiting for room (backpressure).
    pub async fn send(&self, c: C) -> Result<(), RuntimeError> {
        self.tx
            .send(Control::App(c))
            .await
            .map_err(|_| RuntimeError::Stopped)
    }

    /// Sends a command if there is room now.
    pub fn try_send(&self, c: C) -> Result<(), RuntimeError> {
        self.tx.try_send(Control::App(c)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RuntimeError::Busy,
            mpsc::error::TrySendError::Closed(_) => RuntimeError::Stopped,
        })
    }

    /// Starts graceful shutdown: the handler ends every call, registrations are removed, then
    /// the driver stops. Resolves when done.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Control::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Starts keeping up a trunk's registration (in a cluster: the node that holds the
    /// trunk's lease). Resolves the registrar first; `Ok` also when it cannot be resolved
    /// (logged) or the trunk is registering already.
    pub async fn register(&self, spec: RegistrationSpec) -> Result<(), RuntimeError> {
        let Some(resolved) = driver::resolve_registration(spec).await else {
            return Ok(());
        };
        self.tx
            .send(Control::Register(Box::new(resolved)))
            .await
            .map_err(|_| RuntimeError::Stopped)
    }

    /// Un-registers trunk `name` (Expires: 0) and stops refreshing it.
    pub async fn unregister(&self, name: &str) -> Result<(), RuntimeError> {
        self.tx
            .send(Control::Unregister(name.to_owned()))
            .await
            .map_err(|_| RuntimeError::Stopped)
    }

    /// Stack counters, read through the driver.
    pub async fn stack_counters(&self) -> Option<StackCounters> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Control::Counters(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// A registration to keep up (from a trunk with `register = true`).
#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    /// Trunk name, for logs.
    pub name: String,
    /// Registrar host (name or IP).
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

/// An OPTIONS keepalive target.
#[derive(Debug, Clone)]
pub struct KeepaliveSpec {
    /// Trunk name, for logs.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: Option<u16>,
    /// Transport.
    pub transport: Transport,
    /// Interval.
    pub every: Duration,
}

/// Everything the SIP runtime needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// SIP stack settings (listen addresses are taken from `udp_listen` / `tcp_listen`).
    pub stack: StackConfig,
    /// UDP listen addresses.
    pub udp_listen: Vec<SocketAddr>,
    /// TCP listen addresses.
    pub tcp_listen: Vec<SocketAddr>,
    /// TLS listen addresses (need `tls_cert_file` and `tls_key_file`).
    pub tls_listen: Vec<SocketAddr>,
    /// SIP over WebSocket listen addresses (RFC 7118).
    pub ws_listen: Vec<SocketAddr>,
    /// SIP over secure WebSocket listen addresses (need the TLS certificate and key).
    pub wss_listen: Vec<SocketAddr>,
    /// The TLS listener's certificate chain (PEM), reloaded on SIGHUP.
    pub tls_cert_file: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    pub tls_key_file: Option<std::path::PathBuf>,
    /// CA certificates for outbound TLS, instead of Mozilla's roots.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// A client certificate chain and key (PEM) for outbound TLS (mutual TLS).
    pub tls_client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// CRLF keepalive interval on TCP connections we opened (RFC 5626 §3.5.1).
    pub tcp_keepalive: Option<Duration>,
    /// Limits on SIP over TCP.
    pub tcp_limits: TcpLimits,
    /// Registrations.
    pub registrations: Vec<RegistrationSpec>,
    /// OPTIONS keepalives.
    pub keepalives: Vec<KeepaliveSpec>,
}

/// Limits on SIP over TCP: a client that opens connections and sends nothing, or trickles a
/// message, cannot take the process's descriptors or hold them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Most connections open at once, accepted and opened.
    pub max_connections: usize,
    /// Most accepted connections from one IP address.
    pub max_per_source: usize,
    /// A connection on which nothing arrives for this long is closed.
    pub idle_timeout: Duration,
    /// A message whose first bytes arrived must be complete within this long.
    pub message_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        TcpLimits {
            max_connections: 1024,
            max_per_source: 64,
            idle_timeout: Duration::from_secs(300),
            message_timeout: Duration::from_secs(10),
        }
    }
}

/// Counters the runtime keeps besides the stack's.
#[derive(Debug, Default)]
pub struct RuntimeCounters {
    /// UDP datagrams dropped because the driver queue was full.
    pub inbound_dropped: AtomicU64,
    /// Datagrams that could not be sent.
    pub send_errors: AtomicU64,
    /// TCP connections closed at once: over the total or the per-source limit.
    pub tcp_refused: AtomicU64,
    /// TCP connections closed for idleness or a message that did not complete in time.
    pub tcp_timed_out: AtomicU64,
    /// TLS handshakes that failed or timed out (in and out).
    pub tls_failed: AtomicU64,
    /// WebSocket handshakes refused (no `sip` subprotocol, not WebSocket) or timed out.
    pub ws_failed: AtomicU64,
}

/// The process's open-file limit, as found and as left by [`raise_descriptor_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// The soft limit found at start.
    pub soft_before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard one (the common soft limit of 1024 is 500
/// calls' worth of RTP sockets) and says what it found and left; `None` where the limit
/// cannot be read.
pub fn raise_descriptor_limit() -> Option<DescriptorLimit> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft_before, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let soft = if soft_before < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft_before
    };
    Some(DescriptorLimit {
        soft_before,
        soft,
        hard,
    })
}

/// Errors of the runtime.
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
    /// The command queue is full.
    #[error("the SIP driver is busy")]
    Busy,
    /// A TLS certificate, key or CA file is unusable.
    #[error("SIP over TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// TLS listen addresses without a certificate and key.
    #[error("sip.tls_listen needs tls_cert_file and tls_key_file")]
    TlsWithoutCertificate,
}

/// A running SIP runtime.
pub struct Running<C> {
    /// Commands to the driver.
    pub commands: Commands<C>,
    /// The bound SIP addresses.
    pub sip_addrs: Vec<(Transport, SocketAddr)>,
    /// Counters.
    pub counters: Arc<RuntimeCounters>,
    /// Where WebSockets upgraded by the HTTP listener (`/sip`) join the SIP runtime.
    pub ws_entry: ws::WsEntry,
    /// The driver task.
    pub driver: tokio::task::JoinHandle<()>,
}

/// Binds the SIP sockets and starts the driver with `handler`.
pub async fn start<H: CallHandler>(
    opts: Options,
    mut handler: H,
) -> Result<Running<H::Command>, RuntimeError> {
    if opts.udp_listen.is_empty()
        && opts.tcp_listen.is_empty()
        && opts.tls_listen.is_empty()
        && opts.ws_listen.is_empty()
        && opts.wss_listen.is_empty()
    {
        return Err(RuntimeError::NoListener);
    }
    let server_tls = match (&opts.tls_cert_file, &opts.tls_key_file) {
        (Some(c), Some(k)) => Some(tls::ServerTls::load(c, k)?),
        _ if !opts.tls_listen.is_empty() || !opts.wss_listen.is_empty() => {
            return Err(RuntimeError::TlsWithoutCertificate);
        }
        _ => None,
    };
    let client_cert = opts
        .tls_client_cert
        .as_ref()
        .map(|(cert, key)| tls::ClientCert { cert, key });
    let tls_client = tls::client_config(opts.tls_ca_file.as_deref(), client_cert)?;
    let counters = Arc::new(RuntimeCounters::default());
    let mut tcp_limits = opts.tcp_limits;
    match raise_descriptor_limit() {
        Some(l) => {
            tracing::info!(
                soft_before = l.soft_before,
                soft = l.soft,
                hard = l.hard,
                "open file descriptor limit"
            );
            // A quarter of the descriptors for SIP over TCP; the rest for media (two per
            // call), the API and the records.
            let share = usize::try_from(l.soft / 4).unwrap_or(usize::MAX).max(1);
            if tcp_limits.max_connections > share {
                tracing::warn!(
                    configured = tcp_limits.max_connections,
                    effective = share,
                    descriptor_limit = l.soft,
                    "sip.tcp_max_connections capped at a quarter of the descriptor limit"
                );
                tcp_limits.max_connections = share;
            }
        }
        None => tracing::warn!("cannot read the open file descriptor limit"),
    }
    let gate = net::TcpGate::new(tcp_limits);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
    let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    let mut bound = Vec::new();
    let mut udp_sockets = Vec::new();
    for addr in &opts.udp_listen {
        let err = |source| RuntimeError::Bind {
            transport: Transport::Udp,
            addr: *addr,
            source,
        };
        let sock = tokio::net::UdpSocket::bind(addr).await.map_err(err)?;
        let local = sock.local_addr().map_err(err)?;
        bound.push((Transport::Udp, local));
        udp_sockets.push(Arc::new(sock));
    }
    // TCP and TLS listeners: the same accept loop, TLS with the handshake first; WS and
    // WSS the same again with the WebSocket handshake after it.
    let secure = |list: &[SocketAddr], transport| -> Vec<_> {
        server_tls
            .iter()
            .flat_map(|t| list.iter().map(move |a| (transport, *a, Some(t.clone()))))
            .collect()
    };
    let plain = |list: &[SocketAddr], transport| -> Vec<_> {
        list.iter().map(|a| (transport, *a, None)).collect()
    };
    let streams = [
        plain(&opts.tcp_listen, Transport::Tcp),
        secure(&opts.tls_listen, Transport::Tls),
        plain(&opts.ws_listen, Transport::Ws),
        secure(&opts.wss_listen, Transport::Wss),
    ];
    for (transport, addr, tls) in streams.into_iter().flatten() {
        let err = |source| RuntimeError::Bind {
            transport,
            addr,
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
        bound.push((transport, listener.local_addr().map_err(err)?));
        let (tx, limits, gate, counters) = (
            in_tx.clone(),
            opts.stack.limits,
            gate.clone(),
            counters.clone(),
        );
        tokio::spawn(net::accept_loop(
            listener,
            tx,
            limits,
            gate,
            counters,
            tls,
            transport.is_websocket(),
        ));
    }
    if let Some(server) = &server_tls {
        tokio::spawn(tls::reload_on_sighup(server.clone()));
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
    let commands = Commands { tx: cmd_tx };
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    handler.attach(Attached {
        commands: commands.clone(),
        media: media::MediaPool::new(workers),
        wall: WallClock::read(),
    });
    let ws_entry = ws::WsEntry::new(
        in_tx.clone(),
        opts.stack.limits,
        gate.limits().idle_timeout,
        counters.clone(),
    );
    let driver = driver::Driver::new(
        stack_cfg,
        handler,
        udp_sockets,
        in_tx,
        counters.clone(),
        opts.tcp_keepalive,
        gate,
        tls_client,
    );
    let inner = tokio::spawn(driver.run(
        in_rx,
        cmd_rx,
        opts.registrations.clone(),
        opts.keepalives.clone(),
    ));
    // The driver ends only when asked to shut down; a panic, or any other end, leaves the
    // process unable to set up a call, and is reported as a death.
    let join = health::supervise("SIP driver".to_string(), inner, |asked: &bool| *asked);
    Ok(Running {
        commands,
        sip_addrs: bound,
        ws_entry,
        counters,
        driver: join,
    })
}

/// The local IP the OS would use to reach `dest` (no packet is sent: connecting a UDP socket
/// only selects a route).
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

/// Whether an I/O error means the process has no file descriptor left (EMFILE, ENFILE):
/// accepting a connection or opening a socket failed for that, not for the port or peer.
pub(crate) fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::errno::Errno::EMFILE as i32
            || code == nix::errno::Errno::ENFILE as i32
    )
}

/// Monotonic counter helper.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
