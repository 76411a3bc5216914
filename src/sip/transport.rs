//! Transport seam: which transport a message travels on and where it goes.
//!
//! The sans-IO stack never touches a socket. It names a [`Transport`] and a remote address in
//! each [`Transmit`]; the runtime owns the UDP sockets and the TCP connections (one per remote
//! address, TLS ones over TCP, and the WebSocket connections browsers open, RFC 7118).

use std::fmt;
use std::net::SocketAddr;

/// A SIP transport (RFC 3261 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams: retransmissions are the transaction layer's job.
    Udp,
    /// A reliable stream, framed by Content-Length (RFC 3261 §18.3).
    Tcp,
    /// TCP with TLS (RFC 3261 §26.2, RFC 5630): framed like TCP.
    Tls,
    /// WebSocket (RFC 7118): one SIP message per WebSocket message. Only accepted
    /// connections: a WebSocket client (a browser) is reached over the connection it opened.
    Ws,
    /// Secure WebSocket (RFC 7118 §3, WebSocket over TLS).
    Wss,
}

impl Transport {
    /// The token used in a Via header (`SIP/2.0/UDP`).
    pub fn via_token(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
        }
    }

    /// The value of a URI `transport=` parameter.
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// Whether the transport is reliable (timers A, E, G are not used; D, I, J, K are zero).
    pub fn is_reliable(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// Whether it is a WebSocket transport: connections are only accepted, never opened.
    pub fn is_websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }

    /// Parses a Via or URI transport token, case-insensitively.
    pub fn parse(token: &str) -> Option<Transport> {
        if token.eq_ignore_ascii_case("udp") {
            Some(Transport::Udp)
        } else if token.eq_ignore_ascii_case("tcp") {
            Some(Transport::Tcp)
        } else if token.eq_ignore_ascii_case("tls") {
            Some(Transport::Tls)
        } else if token.eq_ignore_ascii_case("ws") {
            Some(Transport::Ws)
        } else if token.eq_ignore_ascii_case("wss") {
            Some(Transport::Wss)
        } else {
            None
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.via_token())
    }
}

/// The far end of a message: a transport plus a socket address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The transport.
    pub transport: Transport,
    /// The remote address (for TCP, it identifies the connection).
    pub addr: SocketAddr,
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport.uri_param(), self.addr)
    }
}

/// Bytes the runtime must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send them.
    pub peer: Peer,
    /// The serialised message (or a keepalive).
    pub payload: Vec<u8>,
}
