//! Dialog state (RFC 3261 §12): identifiers, sequence numbers, route set and remote target.

use std::net::{IpAddr, SocketAddr};

use super::message::{self, Msg};
use super::transport::{Peer, Transport};

/// Default SIP port (RFC 3261 §19.1.2).
pub const DEFAULT_SIP_PORT: u16 = 5060;

/// The dialog identifier (RFC 3261 §12): Call-ID and both tags.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    /// Call-ID.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// The peer's tag (empty until known on the UAC side).
    pub remote_tag: String,
}

/// The state of one dialog.
#[derive(Debug, Clone)]
pub struct Dialog {
    /// Identifiers.
    pub id: DialogId,
    /// Our From/To value, with our tag.
    pub local_uri: String,
    /// The peer's From/To value, with its tag once known.
    pub remote_uri: String,
    /// Our next CSeq number (RFC 3261 §12.2.1.1).
    pub local_seq: u32,
    /// The highest CSeq seen from the peer (§12.2.2).
    pub remote_seq: Option<u32>,
    /// The peer's Contact URI (§12.1: remote target; refreshed by target-refresh requests).
    pub remote_target: String,
    /// The route set, in the order used in Route headers.
    pub route_set: Vec<String>,
    /// Our Contact value.
    pub local_contact: String,
    /// Where the dialog's messages came from / went to first (NAT fallback).
    pub peer: Peer,
}

impl Dialog {
    /// Next CSeq for a new in-dialog request.
    pub fn next_seq(&mut self) -> u32 {
        self.local_seq = self.local_seq.wrapping_add(1);
        self.local_seq
    }

    /// Checks an incoming in-dialog request's CSeq: lower than the last one is out of order
    /// (§12.2.2, answer 500). Records it otherwise.
    pub fn accept_remote_seq(&mut self, seq: u32, is_ack: bool) -> bool {
        if is_ack {
            return true; // ACK repeats the INVITE's CSeq.
        }
        match self.remote_seq {
            Some(last) if seq < last => false,
            _ => {
                self.remote_seq = Some(seq);
                true
            }
        }
    }

    /// Updates the remote target from a target-refresh request or response (§12.2).
    pub fn refresh_target(&mut self, msg: &Msg) {
        if let Some(c) = msg.header("Contact") {
            let uri = message::uri_of(c);
            if !uri.is_empty() {
                self.remote_target = uri.to_string();
            }
        }
    }

    /// Where to send an in-dialog request: the first route (loose routing) or the remote
    /// target. When the target is an IP that differs from the address the dialog's messages
    /// came from, and there is no route set, the peer is taken to be behind NAT and the
    /// observed address is used (symmetric signalling, like `force_rport`). A dialog with a
    /// WebSocket client stays on its connection.
    pub fn next_hop(&self) -> Peer {
        // A WebSocket client is reachable only over the connection it opened (RFC 7118 §5;
        // its Contact is a `.invalid` host, and JsSIP writes `transport=ws` even over WSS).
        if self.peer.transport.is_websocket() && self.route_set.is_empty() {
            return self.peer;
        }
        let uri = self
            .route_set
            .first()
            .map(|r| message::uri_of(r))
            .unwrap_or(&self.remote_target);
        let sips = uri
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("sips:"));
        let transport = if sips {
            Transport::Tls
        } else {
            message::uri_param(uri, "transport")
                .and_then(Transport::parse)
                .unwrap_or(self.peer.transport)
        };
        if transport.is_reliable() && transport == self.peer.transport {
            return self.peer; // reuse the connection
        }
        self.target_over(uri, transport).unwrap_or(self.peer)
    }

    /// The connection this dialog's messages came over has closed: later requests go to the
    /// remote target (or the first route) over a new connection (RFC 3261 §18.1.1), when it
    /// names an IP address on the host that connected (or a route does). A WebSocket
    /// client's dialog stays: it cannot be reached another way.
    pub fn connection_closed(&mut self) {
        if !self.peer.transport.is_reliable() || self.peer.transport.is_websocket() {
            return;
        }
        let uri = self
            .route_set
            .first()
            .map(|r| message::uri_of(r).to_owned())
            .unwrap_or_else(|| self.remote_target.clone());
        if let Some(p) = self.target_over(&uri, self.peer.transport) {
            self.peer = p;
        }
    }

    /// Where `uri` points over `transport`: its IP address and port (the transport's default
    /// port when it has none), unless it is a name, or, without a route set, an address on
    /// another host than the dialog's peer (a client behind NAT: its Contact is private).
    fn target_over(&self, uri: &str, transport: Transport) -> Option<Peer> {
        let (host, port) = message::uri_host_port(uri)?;
        let Ok(ip) = host.parse::<IpAddr>() else {
            return None;
        };
        if self.route_set.is_empty() && ip != self.peer.addr.ip() {
            return None;
        }
        Some(Peer {
            transport,
            addr: SocketAddr::new(
                ip,
                port.unwrap_or(if transport == Transport::Tls {
                    crate::sip::resolve::DEFAULT_SIPS_PORT
                } else {
                    DEFAULT_SIP_PORT
                }),
            ),
        })
    }

    /// Route header values for an in-dialog request.
    pub fn routes(&self) -> &[String] {
        &self.route_set
    }
}

/// Record-Route values of a message, in header order, one entry per URI.
pub fn record_routes(msg: &Msg) -> Vec<String> {
    message::headers_named(msg.headers(), "Record-Route")
        .flat_map(message::split_list)
        .map(str::to_string)
        .collect()
}
