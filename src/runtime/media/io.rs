//! The media workers' system calls: reading RTP/RTCP sockets in batches with kernel receive
//! timestamps, sending a batch's datagrams, and connecting (or freeing) a call's RTP socket
//! once its peer is known.

use std::cell::RefCell;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvmmsg, send, sendto, setsockopt, sockopt,
};

use crate::media::stream::MediaStream;
use crate::runtime::rtp::RtpSockets;
use crate::sip::CallHandle;

/// Largest datagram read from an RTP socket.
const RTP_BUFFER: usize = 2048;
/// Datagrams read per `recvmmsg` call: one per tick is normal, the rest absorbs bursts.
const BATCH: usize = 4;
/// Most spare buffers of one kind kept in [`Outgoing`].
pub(super) const SPARE_MAX: usize = 8;

/// The monotonic and wall clocks read together, once per batch of calls: the wall clock
/// converts the kernel's receive timestamps to `Instant`s.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) now: Instant,
    pub(super) wall: SystemTime,
}

impl Clock {
    pub(super) fn now() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Makes a call's sockets ready for the worker: non-blocking, with kernel receive timestamps.
pub(super) fn prepare_sockets(sockets: &RtpSockets) -> std::io::Result<()> {
    for s in std::iter::once(&sockets.rtp).chain(sockets.rtcp.as_ref()) {
        s.set_nonblocking(true)?;
        // Without kernel timestamps the arrival time falls back to the read time.
        let _ = setsockopt(s, sockopt::ReceiveTimestampns, &true);
    }
    Ok(())
}

/// Datagrams read in a batch's first phase, packed one after the other.
#[derive(Default)]
pub(super) struct Received {
    pub(super) packets: Vec<RxPacket>,
    pub(super) data: Vec<u8>,
}

/// One datagram in [`Received`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RxPacket {
    pub(super) slot: usize,
    pub(super) rtcp: bool,
    pub(super) arrived: Instant,
    pub(super) src: SocketAddr,
    start: usize,
    len: usize,
}

impl Received {
    fn push(&mut self, slot: usize, rtcp: bool, arrived: Instant, src: SocketAddr, data: &[u8]) {
        self.packets.push(RxPacket {
            slot,
            rtcp,
            arrived,
            src,
            start: self.data.len(),
            len: data.len(),
        });
        self.data.extend_from_slice(data);
    }

    /// The packets of `slot` starting at index `from` (they were read in slot order).
    pub(super) fn from(&self, from: usize, slot: usize) -> &[RxPacket] {
        let rest = self.packets.get(from..).unwrap_or_default();
        let n = rest.iter().take_while(|p| p.slot == slot).count();
        rest.get(..n).unwrap_or_default()
    }

    /// A packet's bytes.
    pub(super) fn payload(&self, p: &RxPacket) -> Option<&[u8]> {
        self.data.get(p.start..p.start + p.len)
    }

    pub(super) fn clear(&mut self) {
        self.packets.clear();
        self.data.clear();
    }
}

/// Datagrams to send at the end of a batch, packed one after the other; and the buffers the
/// calls of a worker share.
///
/// A stream hands out its frame and packet buffers and takes them back for reuse; instead of
/// going back to the stream they came from, they go to this pool and are lent to the next
/// call served. A few buffers then serve all the calls of a batch and stay in the cache,
/// where each call's own buffers would be cold each time it is served.
#[derive(Default)]
pub(super) struct Outgoing {
    /// Socket, destination (`None`: the socket is connected to it), start and length in `data`.
    packets: Vec<(RawFd, Option<SocketAddr>, usize, usize)>,
    data: Vec<u8>,
    pcm: Vec<Vec<i16>>,
    bytes: Vec<Vec<u8>>,
    spare_packets: Vec<Vec<u8>>,
    /// The agent's output for one frame.
    pub(super) agent_out: Vec<i16>,
}

impl Outgoing {
    /// Lends a stream the buffers its next tick takes (it takes the last ones handed back).
    pub(super) fn lend(&mut self, stream: &mut MediaStream) {
        if let (Some(caller), Some(sent)) = (self.pcm.pop(), self.pcm.pop()) {
            stream.recycle_frame(caller, sent);
        }
        if let Some(b) = self.bytes.pop() {
            stream.recycle_caller_encoded(b);
        }
        if stream.is_sending()
            && let Some(p) = self.spare_packets.pop()
        {
            stream.recycle_packet(p);
        }
    }

    /// Takes back a frame buffer the stream handed out.
    pub(super) fn spare_pcm(&mut self, v: Vec<i16>) {
        if self.pcm.len() < SPARE_MAX {
            self.pcm.push(v);
        }
    }

    /// Takes back an encoded-frame buffer the stream handed out.
    pub(super) fn spare_bytes(&mut self, v: Vec<u8>) {
        if self.bytes.len() < SPARE_MAX {
            self.bytes.push(v);
        }
    }

    /// Queues a datagram; the payload's buffer is kept for the next stream to fill.
    pub(super) fn push(&mut self, fd: RawFd, to: Option<SocketAddr>, payload: Vec<u8>) {
        self.packets.push((fd, to, self.data.len(), payload.len()));
        self.data.extend_from_slice(&payload);
        if self.spare_packets.len() < SPARE_MAX {
            self.spare_packets.push(payload);
        }
    }

    /// Sends everything queued. A full socket buffer drops the packet: real-time audio is
    /// not queued.
    pub(super) fn send_all(&mut self) {
        for &(fd, to, start, len) in &self.packets {
            if let Some(payload) = self.data.get(start..start + len) {
                let _ = match to {
                    None => send(fd, payload, MsgFlags::empty()),
                    Some(SocketAddr::V4(a)) => {
                        sendto(fd, payload, &SockaddrIn::from(a), MsgFlags::empty())
                    }
                    Some(SocketAddr::V6(a)) => {
                        sendto(fd, payload, &SockaddrIn6::from(a), MsgFlags::empty())
                    }
                };
            }
        }
        self.packets.clear();
        self.data.clear();
    }
}

/// Receive state reused across calls on one thread (`MultiHeaders` holds raw pointers, so it
/// stays on its thread; a worker's service is synchronous).
struct RxBatch {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: [[u8; RTP_BUFFER]; BATCH],
}

thread_local! {
    static RX: RefCell<RxBatch> = RefCell::new(RxBatch {
        headers: MultiHeaders::preallocate(
            BATCH,
            Some(nix::cmsg_space!(nix::sys::time::TimeSpec, nix::libc::in_pktinfo)),
        ),
        bufs: [[0u8; RTP_BUFFER]; BATCH],
    });
}

/// Reads a call's RTP socket, and its RTCP socket when `rtcp_due`, into `rx` under `slot`.
/// Notes in `link` where the latest RTP datagram was sent to, while it watches for that.
pub(super) fn receive(
    sockets: &RtpSockets,
    link: &mut Link,
    rtcp_due: bool,
    slot: usize,
    clock: Clock,
    rx: &mut Received,
) {
    let last_rx = &mut link.last_rx;
    read_socket(&sockets.rtp, clock, |t, src, dst, data| {
        if let Some(dst) = dst {
            *last_rx = Some((src, dst));
        }
        rx.push(slot, false, t, src, data)
    });
    if let Some(rtcp) = &sockets.rtcp
        && rtcp_due
    {
        read_socket(rtcp, clock, |t, src, _, data| {
            rx.push(slot, true, t, src, data)
        });
    }
}

/// Reads every datagram queued on a non-blocking socket with `recvmmsg` (one system call for
/// the usual single packet, no extra call to learn the queue is empty), each with its kernel
/// arrival time and, when `IP_PKTINFO` is on, the address it was sent to.
fn read_socket(
    sock: &UdpSocket,
    clock: Clock,
    mut deliver: impl FnMut(Instant, SocketAddr, Option<IpAddr>, &[u8]),
) {
    let Clock {
        now,
        wall: wall_now,
    } = clock;
    RX.with(|rx| {
        let mut rx = rx.borrow_mut();
        let rx = &mut *rx;
        loop {
            let mut meta: [(usize, Option<SocketAddr>, Instant, Option<IpAddr>); BATCH] =
                [(0, None, now, None); BATCH];
            let count = {
                let [b0, b1, b2, b3] = &mut rx.bufs;
                let mut iovs = [
                    [IoSliceMut::new(&mut b0[..])],
                    [IoSliceMut::new(&mut b1[..])],
                    [IoSliceMut::new(&mut b2[..])],
                    [IoSliceMut::new(&mut b3[..])],
                ];
                let results = match recvmmsg(
                    sock.as_raw_fd(),
                    &mut rx.headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(r) => r,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return, // EAGAIN: nothing queued (or an ICMP error to clear)
                };
                let mut count = 0;
                for (slot, msg) in meta.iter_mut().zip(results) {
                    let src = msg.address.and_then(|a| sockaddr(&a));
                    let mut arrived = now;
                    let mut dst = None;
                    for cm in msg.cmsgs().into_iter().flatten() {
                        match cm {
                            ControlMessageOwned::ScmTimestampns(ts) => {
                                let at = UNIX_EPOCH
                                    + Duration::new(
                                        ts.tv_sec().max(0) as u64,
                                        ts.tv_nsec().max(0) as u32,
                                    );
                                let ago = wall_now.duration_since(at).unwrap_or_default();
                                arrived = now.checked_sub(ago).unwrap_or(now);
                            }
                            ControlMessageOwned::Ipv4PacketInfo(info) => {
                                let a =
                                    std::net::Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                                dst = Some(IpAddr::V4(a));
                            }
                            _ => {}
                        }
                    }
                    *slot = (msg.bytes, src, arrived, dst);
                    count += 1;
                }
                count
            };
            for (i, (len, src, arrived, dst)) in meta.iter().take(count).enumerate() {
                if let (Some(src), Some(data)) = (src, rx.bufs[i].get(..*len)) {
                    deliver(*arrived, *src, *dst, data);
                }
            }
            if count < BATCH {
                return; // the queue is empty
            }
        }
    });
}

fn sockaddr(a: &SockaddrStorage) -> Option<SocketAddr> {
    a.as_sockaddr_in()
        .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
        .or_else(|| {
            a.as_sockaddr_in6()
                .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
        })
}

/// Where a call's RTP socket is connected, and what decides it.
#[derive(Debug)]
pub(super) struct Link {
    /// The peer the RTP socket is connected to ([`MediaStream::rtp_source`]), if it is.
    linked: Option<SocketAddr>,
    /// The last [`MediaStream::rtp_source`] acted on (connecting may have failed).
    target: Option<SocketAddr>,
    /// The RTP socket is bound to the wildcard address (connecting it binds it to the
    /// route's source address, see [`relink`]).
    wildcard: bool,
    /// `IP_PKTINFO` is on: each datagram tells the address it was sent to.
    pktinfo: bool,
    /// Source and destination of the latest RTP datagram, while `pktinfo` is on.
    last_rx: Option<(SocketAddr, IpAddr)>,
}

impl Link {
    /// A call's link state: unconnected, watching destinations if bound to the wildcard.
    pub(super) fn new(sockets: &RtpSockets) -> Self {
        let wildcard = sockets
            .rtp
            .local_addr()
            .is_ok_and(|a| a.ip().is_unspecified());
        Self {
            linked: None,
            target: None,
            wildcard,
            pktinfo: wildcard && watch_destination(&sockets.rtp, true),
            last_rx: None,
        }
    }

    /// Whether the RTP socket's link no longer matches the stream's [`MediaStream::rtp_source`].
    pub(super) fn due(&self, source: Option<SocketAddr>) -> bool {
        source != self.target
    }

    /// The socket and destination for a datagram to `to` (`None` when the socket is
    /// connected to it).
    pub(super) fn route(
        &self,
        sockets: &RtpSockets,
        rtcp: bool,
        to: SocketAddr,
    ) -> (RawFd, Option<SocketAddr>) {
        match (rtcp, sockets.rtcp.as_ref()) {
            (true, Some(s)) => (s.as_raw_fd(), Some(to)),
            // RTP, or RTCP over rtcp-mux: the RTP socket, connected or not.
            _ => (
                sockets.rtp.as_raw_fd(),
                Some(to).filter(|&t| self.linked != Some(t)),
            ),
        }
    }
}

/// Connects the RTP socket to `source`, the one peer the stream still accepts once its
/// latching window has closed, or frees it again when a re-INVITE reopens the window
/// (`source` is `None`). Connected, the kernel drops other senders (the stream would drop
/// them too) and sends to the peer along a route found once instead of per packet
/// (`docs/PERFORMANCE.md`, "Media per call").
///
/// Connecting a socket bound to the wildcard address also binds it to the source address of
/// the route to the peer: datagrams sent to any other local address would no longer reach it.
/// So a wildcard socket is connected only once a datagram from the peer has shown (through
/// `IP_PKTINFO`) that the peer sends to that very address; on a host where the route back
/// leaves from another address than the one the peer sends to, it stays unconnected.
///
/// An error means the port could not be bound again after freeing it: the call has no media.
pub(super) fn relink(
    call: CallHandle,
    sockets: &mut RtpSockets,
    link: &mut Link,
    source: Option<SocketAddr>,
) -> std::io::Result<()> {
    match source {
        Some(peer) => {
            if link.wildcard {
                let Some(&(_, dst)) = link.last_rx.as_ref().filter(|(src, _)| *src == peer) else {
                    // Nothing from the peer seen since the window closed: look again at the
                    // next tick (a comparison until then), unless nothing can be seen.
                    if !link.pktinfo {
                        link.target = source;
                    }
                    return Ok(());
                };
                let from = route_source(peer);
                if from != Some(dst) {
                    tracing::debug!(%call, %peer, %dst, route_from = ?from, "RTP socket left unconnected: the route to the peer leaves from another address than the one it sends to");
                    link.target = source;
                    stop_watching(&sockets.rtp, link);
                    return Ok(());
                }
            }
            link.target = source;
            match sockets.rtp.connect(peer) {
                Ok(()) => link.linked = Some(peer),
                Err(e) => {
                    // Not fatal: sending with an address works on an unconnected socket.
                    tracing::debug!(%call, %peer, error = %e, "cannot connect the RTP socket");
                    link.linked = None;
                }
            }
            stop_watching(&sockets.rtp, link);
        }
        None => {
            link.target = None;
            if link.linked.take().is_some() {
                reopen_socket(&mut sockets.rtp)?;
            }
            if link.wildcard && !link.pktinfo {
                link.pktinfo = watch_destination(&sockets.rtp, true);
            }
            link.last_rx = None;
        }
    }
    Ok(())
}

/// Turns `IP_PKTINFO` off once the decision is made (it costs a control message a datagram).
fn stop_watching(sock: &UdpSocket, link: &mut Link) {
    if link.pktinfo && watch_destination(sock, false) {
        link.pktinfo = false;
    }
    link.last_rx = None;
}

/// Turns `IP_PKTINFO` on or off on an IPv4 socket; whether that worked.
fn watch_destination(sock: &UdpSocket, on: bool) -> bool {
    sock.local_addr().is_ok_and(|a| a.is_ipv4())
        && setsockopt(sock, sockopt::Ipv4PacketInfo, &on).is_ok()
}

/// The local address the kernel sends from to reach `peer`, found by connecting a throwaway
/// socket (no datagram is sent).
fn route_source(peer: SocketAddr) -> Option<IpAddr> {
    let any: IpAddr = match peer {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let probe = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    probe.connect(peer).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

/// Replaces a connected RTP socket with an unconnected one on the same port, so that packets
/// from any address reach it again (latching after a re-INVITE). Safe Rust has no way to
/// dissolve a connection (`connect` with `AF_UNSPEC`), so the socket is closed and the port
/// bound again; UDP frees a port at close, with no wait. A placeholder on a free port holds
/// the field meanwhile.
fn reopen_socket(sock: &mut UdpSocket) -> std::io::Result<()> {
    let local = sock.local_addr()?;
    let placeholder = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
    drop(std::mem::replace(sock, placeholder));
    let fresh = UdpSocket::bind(local)?;
    fresh.set_nonblocking(true)?;
    // Without kernel timestamps the arrival time falls back to the read time.
    let _ = setsockopt(&fresh, sockopt::ReceiveTimestampns, &true);
    *sock = fresh;
    Ok(())
}
