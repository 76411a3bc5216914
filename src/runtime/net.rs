//! Socket tasks: UDP receive loops, the TCP accept loop and per-connection framing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::{RuntimeCounters, TCP_WRITE_QUEUE, bump};
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

/// Accepts TCP connections.
pub async fn accept_loop(listener: TcpListener, tx: mpsc::Sender<Inbound>, limits: Limits) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let (wtx, wrx) = mpsc::channel(TCP_WRITE_QUEUE);
                if tx
                    .send(Inbound::TcpOpened {
                        addr,
                        tx: wtx.clone(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::spawn(connection(stream, addr, tx.clone(), wtx, wrx, limits, None));
            }
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Opens an outbound TCP connection whose write queue already exists.
pub async fn connect(
    addr: SocketAddr,
    tx: mpsc::Sender<Inbound>,
    wtx: mpsc::Sender<Vec<u8>>,
    wrx: mpsc::Receiver<Vec<u8>>,
    limits: Limits,
    keepalive: Option<Duration>,
) {
    match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => connection(stream, addr, tx, wtx, wrx, limits, keepalive).await,
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

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    tx: mpsc::Sender<Inbound>,
    wtx: mpsc::Sender<Vec<u8>>,
    mut wrx: mpsc::Receiver<Vec<u8>>,
    limits: Limits,
    keepalive: Option<Duration>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
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
    'read: loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        framer.push(&buf[..n]);
        while let Some(frame) = framer.next_frame(&limits) {
            match frame {
                Frame::Message(bytes) => {
                    let msg = Inbound::Message {
                        peer: Peer {
                            transport: Transport::Tcp,
                            addr,
                        },
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
