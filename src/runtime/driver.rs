//! The driver task: owns the stack and the call handler, and is the only reader of the clock
//! for them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::net::{self, Inbound};
use super::{
    CallHandler, Control, KeepaliveSpec, RegistrationSpec, RuntimeCounters, SHUTDOWN_GRACE,
    TCP_WRITE_QUEUE, bump, local_ip_towards,
};
use crate::sip::registration::{RegistrationConfig, RegistrationState};
use crate::sip::resolve::{SipTarget, TargetTransport};
use crate::sip::{Output, Peer, RegistrationId, SipEvent, SipStack, StackConfig, Transport};

/// Inbound messages handled in one go before timers and commands get their turn.
const INBOUND_BATCH: usize = 64;

/// Commands taken after each inbound batch.
const COMMAND_BATCH: usize = 16;

pub(super) struct Driver<H: CallHandler> {
    stack: SipStack,
    calls: H,
    udp: Vec<Arc<UdpSocket>>,
    tcp: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    in_tx: mpsc::Sender<Inbound>,
    counters: Arc<RuntimeCounters>,
    keepalive: Option<Duration>,
    /// Limits and timeouts of TCP connections (those we open take their timeouts).
    tcp_gate: net::TcpGate,
    /// How TLS connections we open verify the server.
    tls_client: Arc<tokio_rustls::rustls::ClientConfig>,
    /// The registrations kept up, by trunk name.
    registrations: Vec<(String, RegistrationId)>,
    /// OPTIONS keepalives: where, Request-URI, interval, next due time.
    keepalives: Vec<(Peer, String, Duration, Instant)>,
    epoch: (Instant, tokio::time::Instant),
}

impl<H: CallHandler> Driver<H> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: StackConfig,
        calls: H,
        udp: Vec<Arc<UdpSocket>>,
        in_tx: mpsc::Sender<Inbound>,
        counters: Arc<RuntimeCounters>,
        keepalive: Option<Duration>,
        tcp_gate: net::TcpGate,
        tls_client: Arc<tokio_rustls::rustls::ClientConfig>,
    ) -> Self {
        let now = Instant::now();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        Driver {
            stack: SipStack::new(cfg, seed, now),
            calls,
            udp,
            tcp: HashMap::new(),
            in_tx,
            counters,
            keepalive,
            tcp_gate,
            tls_client,
            registrations: Vec::new(),
            keepalives: Vec::new(),
            epoch: (now, tokio::time::Instant::now()),
        }
    }

    /// Runs until told to shut down (returns true), or until every inbound sender is gone
    /// (false: it cannot happen while the driver holds one itself).
    pub(super) async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::Receiver<Control<H::Command>>,
        regs: Vec<RegistrationSpec>,
        keepalives: Vec<KeepaliveSpec>,
    ) -> bool {
        for r in regs {
            if let Some(resolved) = resolve_registration(r).await {
                self.begin_registration(resolved);
            }
        }
        for t in keepalives {
            self.start_keepalive(t).await;
        }
        self.drain();
        let mut shutdown: Option<(Instant, oneshot::Sender<()>)> = None;
        loop {
            let deadline = self.next_deadline(shutdown.as_ref().map(|s| s.0));
            let sleep = tokio::time::sleep_until(self.to_tokio(deadline));
            tokio::select! {
                biased;
                m = inbound.recv() => match m {
                    Some(m) => {
                        self.on_inbound(m);
                        // Take whatever else is queued before polling (batching under load).
                        let mut n = 0;
                        while n < INBOUND_BATCH {
                            match inbound.try_recv() {
                                Ok(m) => self.on_inbound(m),
                                Err(_) => break,
                            }
                            n += 1;
                        }
                        // Under a flood the inbound branch is always ready: timers (the
                        // retransmissions, timeouts and refreshes of every call) and commands
                        // (API requests, shutdown) are served after every batch all the same.
                        // (next_deadline reads the stack's outputs: drain them first.)
                        self.drain();
                        let now = Instant::now();
                        if self.next_deadline(shutdown.as_ref().map(|s| s.0)) <= now {
                            self.on_timeout(now);
                        }
                        for _ in 0..COMMAND_BATCH {
                            match commands.try_recv() {
                                Ok(c) => self.on_command(c, &mut shutdown),
                                Err(_) => break,
                            }
                        }
                    }
                    None => return false,
                },
                c = commands.recv() => {
                    if let Some(c) = c {
                        self.on_command(c, &mut shutdown);
                    }
                }
                _ = sleep => self.on_timeout(Instant::now()),
            }
            self.drain();
            if let Some((until, _)) = &shutdown {
                let regs_done = self.registrations.iter().all(|(_, id)| {
                    !matches!(
                        self.stack.registration_state(*id),
                        Some(RegistrationState::Registered { .. })
                            | Some(RegistrationState::Registering)
                    )
                });
                if (self.calls.is_idle() && regs_done) || Instant::now() >= *until {
                    if let Some((_, done)) = shutdown.take() {
                        let _ = done.send(());
                    }
                    return true;
                }
            }
        }
    }

    fn on_command(
        &mut self,
        c: Control<H::Command>,
        shutdown: &mut Option<(Instant, oneshot::Sender<()>)>,
    ) {
        match c {
            Control::Shutdown(done) => {
                let now = Instant::now();
                tracing::info!(
                    registrations = self.registrations.len(),
                    "shutting down: ending calls, un-registering"
                );
                self.calls.hangup_all(now, &mut self.stack);
                for (_, id) in self.registrations.clone() {
                    let _ = self.stack.unregister(now, id);
                }
                *shutdown = Some((now + SHUTDOWN_GRACE, done));
            }
            Control::Counters(reply) => {
                let _ = reply.send(self.stack.counters());
            }
            Control::App(c) => self
                .calls
                .handle_command(Instant::now(), &mut self.stack, c),
            Control::Register(r) => {
                if self.registrations.iter().any(|(n, _)| *n == r.spec.name) {
                    tracing::debug!(trunk = %r.spec.name, "already registering");
                } else {
                    self.begin_registration(*r);
                }
            }
            Control::Unregister(name) => {
                let now = Instant::now();
                self.registrations.retain(|(n, id)| {
                    if *n != name {
                        return true;
                    }
                    tracing::info!(trunk = %name, "un-registering");
                    let _ = self.stack.unregister(now, *id);
                    false
                });
            }
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        self.stack.handle_timeout(now);
        self.calls.handle_timeout(now, &mut self.stack);
        for (peer, uri, every, next) in self.keepalives.iter_mut() {
            if *next <= now {
                self.stack.send_options(now, *peer, uri);
                // Absolute schedule: no drift however late this wake-up was.
                while *next <= now {
                    *next += *every;
                }
            }
        }
    }

    fn on_inbound(&mut self, m: Inbound) {
        match m {
            Inbound::Message { peer, bytes } => {
                self.stack.handle_message(Instant::now(), peer, &bytes)
            }
            Inbound::TcpOpened { addr, tx } => {
                self.tcp.insert(addr, tx);
            }
            Inbound::TcpClosed { addr } => {
                // Answers to what came in on this connection before it closed (a request
                // followed by garbage in the same read) go out before its sender is dropped.
                self.drain();
                self.tcp.remove(&addr);
                // What waited on this connection for a first answer fails over now.
                let now = Instant::now();
                for transport in [
                    Transport::Tcp,
                    Transport::Tls,
                    Transport::Ws,
                    Transport::Wss,
                ] {
                    self.stack
                        .handle_transport_error(now, Peer { transport, addr });
                }
            }
        }
    }

    /// Starts keeping up a registration whose registrar is resolved.
    fn begin_registration(&mut self, resolved: ResolvedRegistration) {
        let ResolvedRegistration { spec: r, next_hop } = resolved;
        let local_ip = local_ip_towards(next_hop.addr).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let port = self
            .stack
            .config()
            .listen
            .iter()
            .find(|(t, _)| *t == r.transport)
            .map(|(_, a)| a.port())
            .unwrap_or(5060);
        let ip = self.stack.config().advertised_ip.unwrap_or(local_ip);
        let registrar = match r.port {
            Some(p) => format!("sip:{}:{p}", r.host),
            None => format!("sip:{}", r.host),
        };
        let cfg = RegistrationConfig {
            registrar,
            aor: format!("sip:{}@{}", r.user, r.domain),
            contact_user: r.user.clone(),
            credentials: r.credentials.clone(),
            expires: r.expires,
            next_hop,
            routes: r
                .outbound_proxy
                .iter()
                .map(|p| format!("<{}>", with_lr(p)))
                .collect(),
            local_addr: SocketAddr::new(ip, port),
        };
        tracing::info!(trunk = %r.name, registrar = %cfg.registrar, aor = %cfg.aor, "registering");
        let id = self.stack.register(Instant::now(), cfg);
        self.registrations.push((r.name, id));
    }

    async fn start_keepalive(&mut self, t: KeepaliveSpec) {
        let every = t.every;
        let target = SipTarget {
            host: t.host.clone(),
            port: t.port,
            transport: Some(target_transport(t.transport)),
        };
        match super::dns::resolve(&target).await {
            Ok(list) => {
                if let Some(c) = list.as_slice().first() {
                    let uri = match t.port {
                        Some(p) => format!("sip:{}:{p}", t.host),
                        None => format!("sip:{}", t.host),
                    };
                    let peer = Peer {
                        transport: t.transport,
                        addr: c.addr,
                    };
                    tracing::info!(trunk = %t.name, %peer, every_s = every.as_secs(), "OPTIONS keepalive");
                    self.keepalives.push((peer, uri, every, Instant::now()));
                }
            }
            Err(e) => {
                tracing::warn!(trunk = %t.name, error = %e, "cannot resolve trunk for OPTIONS keepalive")
            }
        }
    }

    /// Sends every transmit and hands every event to the call manager.
    fn drain(&mut self) {
        loop {
            match self.stack.poll_output() {
                Output::Transmit(t) => self.transmit(t.peer, t.payload),
                Output::Event(ev) => {
                    if let SipEvent::Registration { id, state } = &ev {
                        log_registration(*id, state);
                    }
                    self.calls.handle_event(Instant::now(), &mut self.stack, ev);
                }
                Output::Timeout(_) => break,
            }
        }
    }

    fn transmit(&mut self, peer: Peer, payload: Vec<u8>) {
        match peer.transport {
            Transport::Udp => {
                let sock = self
                    .udp
                    .iter()
                    .find(|s| {
                        s.local_addr()
                            .map(|a| a.is_ipv4() == peer.addr.is_ipv4())
                            .unwrap_or(false)
                    })
                    .or_else(|| self.udp.first());
                let Some(sock) = sock else {
                    bump(&self.counters.send_errors);
                    return;
                };
                if let Err(e) = sock.try_send_to(&payload, peer.addr) {
                    bump(&self.counters.send_errors);
                    tracing::trace!(%peer, error = %e, "udp send failed");
                }
            }
            Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => {
                if let Some(tx) = self.tcp.get(&peer.addr) {
                    if tx.try_send(payload).is_err() {
                        bump(&self.counters.send_errors);
                    }
                    return;
                }
                if peer.transport.is_websocket() {
                    // A WebSocket client is reached only over the connection it opened,
                    // and that has closed: what waited for an answer fails now.
                    bump(&self.counters.send_errors);
                    tracing::debug!(%peer, "no WebSocket connection to send on");
                    self.stack.handle_transport_error(Instant::now(), peer);
                    return;
                }
                let (wtx, wrx) = mpsc::channel(TCP_WRITE_QUEUE);
                let _ = wtx.try_send(payload);
                self.tcp.insert(peer.addr, wtx.clone());
                let limits = self.stack.config().limits;
                let conn = net::Conn {
                    addr: peer.addr,
                    transport: peer.transport,
                    limits,
                    keepalive: self.keepalive,
                    timeouts: self.tcp_gate.limits(),
                    counters: self.counters.clone(),
                };
                let tls = (peer.transport == Transport::Tls).then(|| {
                    (
                        self.tls_client.clone(),
                        super::tls::server_name_for(peer.addr),
                    )
                });
                tokio::spawn(net::connect(conn, tls, self.in_tx.clone(), wtx, wrx));
            }
        }
    }

    fn next_deadline(&mut self, extra: Option<Instant>) -> Instant {
        let stack = match self.stack.poll_output() {
            Output::Timeout(t) => t,
            // poll_output is drained before we get here; anything else is a bug we tolerate.
            _ => Instant::now(),
        };
        let keepalive = self.keepalives.iter().map(|k| k.3).min();
        [Some(stack), self.calls.poll_timeout(), extra, keepalive]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(stack)
    }

    fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        match t.checked_duration_since(self.epoch.0) {
            Some(d) => self.epoch.1 + d,
            None => self.epoch.1,
        }
    }
}

/// How a trunk's transport is looked up (RFC 3263). Trunks are UDP, TCP or TLS (the
/// configuration has no other); a WebSocket transport would be its underlying stream.
fn target_transport(t: Transport) -> TargetTransport {
    match t {
        Transport::Udp => TargetTransport::Udp,
        Transport::Tcp | Transport::Ws => TargetTransport::Tcp,
        Transport::Tls | Transport::Wss => TargetTransport::Tls,
    }
}

/// Adds `;lr` (loose routing, RFC 3261 §16.12.1) to a Route URI that lacks it.
pub fn with_lr(uri: &str) -> String {
    if uri.contains(";lr") {
        uri.to_string()
    } else {
        format!("{uri};lr")
    }
}

fn log_registration(id: RegistrationId, state: &RegistrationState) {
    match state {
        RegistrationState::Registered { expires } => {
            tracing::info!(registration = id.0, expires, "registered")
        }
        RegistrationState::Failed { status, reason } => {
            tracing::warn!(registration = id.0, status, reason = %reason, "registration failed; will retry")
        }
        RegistrationState::Unregistered => tracing::info!(registration = id.0, "unregistered"),
        RegistrationState::Registering => {}
    }
}

/// A registration whose registrar (or outbound proxy) is resolved: what the driver starts.
#[derive(Debug)]
pub struct ResolvedRegistration {
    spec: RegistrationSpec,
    next_hop: Peer,
}

/// Resolves the registrar (or the outbound proxy) of `r`; `None`, logged, if it cannot be.
pub(super) async fn resolve_registration(r: RegistrationSpec) -> Option<ResolvedRegistration> {
    let target = SipTarget {
        host: r.host.clone(),
        port: r.port,
        transport: Some(target_transport(r.transport)),
    };
    let proxy_target = r
        .outbound_proxy
        .as_deref()
        .and_then(|p| SipTarget::from_uri(p).ok());
    let resolved = match super::dns::resolve(proxy_target.as_ref().unwrap_or(&target)).await {
        Ok(list) => list,
        Err(e) => {
            tracing::error!(trunk = %r.name, host = %r.host, error = %e, "cannot resolve registrar; registration not started");
            return None;
        }
    };
    let c = resolved.as_slice().first().copied()?;
    let next_hop = Peer {
        transport: r.transport,
        addr: c.addr,
    };
    Some(ResolvedRegistration { spec: r, next_hop })
}
