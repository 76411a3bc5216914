//! Socket tasks: UDP receive loops, the TCP and TLS accept loops and per-connection framing
//! (the same for TCP and TLS: a TLS connection is a TCP one with the handshake first).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::tls::ServerTls;
use super::{RuntimeCounters, TCP_WRITE_QUEUE, TcpLimits, bump, out_of_descriptors};
use crate::sip::message::{Frame, Limits, StreamFramer};
use crate::sip::{Peer, Transport};

/// The largest UDP datagram read (IPv4 maximum payload).
const UDP_BUFFER: usize = 65_535;
/// TCP read chunk.
const TCP_READ_CHUNK: usize = 16 * 1024;
/// CRLF keepalive "pong" (RFC 5626 §4.4.1).
const PONG: &[u8] = b"\r\n";
/// CRLF keepalive "ping".
const PING: &[u8] = b"\r\n\r\n";

/// What socket tasks tell the driver.
#[derive(Debug)]
pub enum Inbound {
    /// A message (datagram, or one framed from a stream).
    Message {
        /// Who sent it.
        peer: Peer,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// A TCP connection is up; send to it through this queue.
    TcpOpened {
        /// Remote address.
        addr: SocketAddr,
        /// Its write queue.
        tx: mpsc::Sender<Vec<u8>>,
    },
    /// A TCP connection closed.
    TcpClosed {
        /// Remote address.
        addr: SocketAddr,
    },
}

/// Reads datagrams and hands them to the driver; drops (and counts) when the driver is behind.
pub async fn udp_recv_loop(
    sock: Arc<UdpSocket>,
    tx: mpsc::Sender<Inbound>,
    counters: Arc<RuntimeCounters>,
) {
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let msg = Inbound::Message {
                    peer: Peer {
                        transport: Transport::Udp,
                        addr: from,
                    },
                    bytes: buf[..n].to_vec(),
                };
                match tx.try_send(msg) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => bump(&counters.inbound_dropped),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Err(e) => {
                // ICMP errors (connection refused) surface here on some systems: keep going.
                tracing::trace!(error = %e, "udp recv error");
            }
        }
    }
}

/// How long a closing TCP connection may take to write the responses still queued.
const TCP_DRAIN: Duration = Duration::from_secs(2);

/// Admission of accepted TCP connections: a total and a per-source count, each slot held by
/// a [`TcpSlot`] for as long as its connection lives.
#[derive(Debug, Clone)]
pub struct TcpGate {
    limits: TcpLimits,
    /// Connections open per source address, and in all. A std mutex: held for a map update,
    /// never across an await.
    open: Arc<Mutex<(HashMap<IpAddr, usize>, usize)>>,
}

/// One admitted connection's place; given back on drop.
#[derive(Debug)]
pub struct TcpSlot {
    gate: TcpGate,
    ip: IpAddr,
}

impl TcpGate {
    /// A gate with these limits.
    pub fn new(limits: TcpLimits) -> Self {
        TcpGate {
            limits,
            open: Arc::new(Mutex::new((HashMap::new(), 0))),
        }
    }

    /// The limits, timeouts included.
    pub fn limits(&self) -> TcpLimits {
        self.limits
    }

    /// A slot for a connection from `ip`, or `None` when the total or that source's limit is
    /// reached.
    pub fn admit(&self, ip: IpAddr) -> Option<TcpSlot> {
        // A panic elsewhere while holding the lock leaves consistent counts: use them.
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (per_source, total) = &mut *open;
        let mine = per_source.get(&ip).copied().unwrap_or(0);
        if *total >= self.limits.max_connections || mine >= self.limits.max_per_source {
            return None;
        }
        *total += 1;
        per_source.insert(ip, mine + 1);
        Some(TcpSlot {
            gate: self.clone(),
            ip,
        })
    }
}

impl Drop for TcpSlot {
    fn drop(&mut self) {
        let mut open = self
            .gate
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (per_source, total) = &mut *open;
        *total = total.saturating_sub(1);
        if let Some(n) = per_source.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                per_source.remove(&self.ip);
            }
        }
    }
}

/// Accepts TCP connections (with `tls`, TLS ones: the handshake within the message
/// timeout), within the gate's limits, which TCP, TLS, WS and WSS share. With `websocket`, the
/// connection then does the WebSocket handshake (in the rest of that time) and carries SIP
/// over WebSocket ([`super::ws`]).
pub async fn accept_loop(
    listener: TcpListener,
    tx: mpsc::Sender<Inbound>,
    limits: Limits,
    gate: TcpGate,
    counters: Arc<RuntimeCounters>,
    tls: Option<ServerTls>,
    websocket: bool,
) {
    let transport = match (tls.is_some(), websocket) {
        (false, false) => Transport::Tcp,
        (true, false) => Transport::Tls,
        (false, true) => Transport::Ws,
        (true, true) => Transport::Wss,
    };
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                let Some(slot) = gate.admit(addr.ip()) else {
                    // Closed at once (dropped): the peer sees the connection end.
                    bump(&counters.tcp_refused);
                    tracing::debug!(%addr, "tcp connection refused: connection limit");
                    continue;
                };
                let conn = Conn {
                    addr,
                    transport,
                    limits,
                    keepalive: None,
                    timeouts: gate.limits(),
                    counters: counters.clone(),
                };
                let tx = tx.clone();
                let acceptor = tls.as_ref().map(|t| TlsAcceptor::from(t.config()));
                tokio::spawn(async move {
                    let deadline = tokio::time::Instant::now() + conn.timeouts.message_timeout;
                    let Some(acceptor) = acceptor else {
                        established(stream, conn, tx, deadline).await;
                        drop(slot);
                        return;
                    };
                    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => established(s, conn, tx, deadline).await,
                        Ok(Err(e)) => {
                            bump(&conn.counters.tls_failed);
                            tracing::info!(%addr, error = %e, "TLS handshake failed");
                        }
                        Err(_) => {
                            bump(&conn.counters.tls_failed);
                            tracing::info!(%addr, "TLS handshake not done in time");
                        }
                    }
                    drop(slot);
                });
            }
            Err(e) if out_of_descriptors(&e) => {
                tracing::error!(
                    error = %e,
                    "out of file descriptors: a SIP over TCP connection could not be accepted \
                     (see the descriptor limit logged at start)"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// An accepted connection is up (after its TLS handshake, if any): a WebSocket one does its
/// WebSocket handshake by `deadline`; then it is served.
async fn established<S>(
    stream: S,
    conn: Conn,
    tx: mpsc::Sender<Inbound>,
    deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if conn.transport.is_websocket() {
        super::ws::serve(stream, conn, tx, deadline).await;
    } else {
        opened(stream, conn, tx).await;
    }
}

/// An accepted connection is up (after its handshake): tell the driver, then serve it.
async fn opened<S>(stream: S, conn: Conn, tx: mpsc::Sender<Inbound>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (wtx, wrx) = mpsc::channel(TCP_WRITE_QUEUE);
    let open = Inbound::TcpOpened {
        addr: conn.addr,
        tx: wtx.clone(),
    };
    if tx.send(open).await.is_err() {
        return;
    }
    connection(stream, conn, tx, wtx, wrx).await;
}

/// One connection's settings.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The peer.
    pub addr: SocketAddr,
    /// TCP or TLS.
    pub transport: Transport,
    /// Message limits.
    pub limits: Limits,
    /// CRLF keepalive interval (connections we opened).
    pub keepalive: Option<Duration>,
    /// Idle and message timeouts.
    pub timeouts: TcpLimits,
    /// Where timeouts are counted.
    pub counters: Arc<RuntimeCounters>,
}

/// Opens an outbound TCP connection whose write queue already exists; with `tls` (the
/// client configuration and the name to verify), a TLS one.
pub async fn connect(
    conn: Conn,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    tx: mpsc::Sender<Inbound>,
    wtx: mpsc::Sender<Vec<u8>>,
    wrx: mpsc::Receiver<Vec<u8>>,
) {
    let addr = conn.addr;
    match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            match tls {
                None => connection(stream, conn, tx, wtx, wrx).await,
                Some((cfg, name)) => {
                    let handshake = TlsConnector::from(cfg).connect(name.clone(), stream);
                    match tokio::time::timeout(conn.timeouts.message_timeout, handshake).await {
                        Ok(Ok(s)) => connection(s, conn, tx, wtx, wrx).await,
                        Ok(Err(e)) => {
                            bump(&conn.counters.tls_failed);
                            tracing::warn!(%addr, server = ?name, error = %e, "TLS connection refused: the server's certificate or handshake failed");
                            let _ = tx.send(Inbound::TcpClosed { addr }).await;
                        }
                        Err(_) => {
                            bump(&conn.counters.tls_failed);
                            tracing::warn!(%addr, "TLS handshake timed out");
                            let _ = tx.send(Inbound::TcpClosed { addr }).await;
                        }
                    }
                }
            }
        }
        Ok(Err(e)) => {
            tracing::warn!(%addr, error = %e, "tcp connect failed");
            let _ = tx.send(Inbound::TcpClosed { addr }).await;
        }
        Err(_) => {
            tracing::warn!(%addr, "tcp connect timed out");
            let _ = tx.send(Inbound::TcpClosed { addr }).await;
        }
    }
}

async fn connection<S>(
    stream: S,
    conn: Conn,
    tx: mpsc::Sender<Inbound>,
    wtx: mpsc::Sender<Vec<u8>>,
    mut wrx: mpsc::Receiver<Vec<u8>>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let Conn {
        addr,
        transport,
        limits,
        keepalive,
        timeouts,
        counters,
    } = conn;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let writer = tokio::spawn(async move {
        let mut ticker =
            keepalive.map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
        loop {
            let next = async {
                match ticker.as_mut() {
                    Some(t) => {
                        t.tick().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                m = wrx.recv() => match m {
                    Some(bytes) => if wr.write_all(&bytes).await.is_err() { break },
                    None => break,
                },
                _ = next => if wr.write_all(PING).await.is_err() { break },
            }
        }
    });
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; TCP_READ_CHUNK];
    // When the message not yet complete began to arrive.
    let mut partial_since: Option<tokio::time::Instant> = None;
    'read: loop {
        let wait = match partial_since {
            Some(t) => timeouts.message_timeout.saturating_sub(t.elapsed()),
            None => timeouts.idle_timeout,
        };
        let n = match tokio::time::timeout(wait, rd.read(&mut buf)).await {
            Err(_) => {
                bump(&counters.tcp_timed_out);
                tracing::debug!(%addr, partial = partial_since.is_some(), "closing tcp connection: idle or message incomplete in time");
                break;
            }
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => n,
        };
        framer.push(&buf[..n]);
        while let Some(frame) = framer.next_frame(&limits) {
            match frame {
                Frame::Message(bytes) => {
                    let msg = Inbound::Message {
                        peer: Peer { transport, addr },
                        bytes,
                    };
                    if tx.send(msg).await.is_err() {
                        break 'read;
                    }
                }
                Frame::Ping => {
                    let _ = wtx.try_send(PONG.to_vec());
                }
                Frame::Broken(e) => {
                    tracing::info!(%addr, error = %e, "closing unframeable tcp stream");
                    break 'read;
                }
            }
        }
        partial_since = match framer.buffered() {
            0 => None,
            _ => partial_since.or_else(|| Some(tokio::time::Instant::now())),
        };
    }
    // Answers to the messages framed before the end (a request followed by garbage in the
    // same read, RFC 4475-style) are still owed: the driver handles those messages before
    // the close below, queues their responses, then drops its sender, and the writer
    // drains the queue and stops. A peer that stops reading cannot hold the task: the
    // writer gets TCP_DRAIN at most.
    drop(wtx);
    let _ = tx.send(Inbound::TcpClosed { addr }).await;
    let mut writer = writer;
    if tokio::time::timeout(TCP_DRAIN, &mut writer).await.is_err() {
        writer.abort();
    }
}
