//! Connection reuse (RFC 5923): a TLS client that puts `alias` in its Via asks that requests
//! for its advertised address (the Via's sent-by) come back over the connection it opened,
//! instead of over a new connection to that address.
//!
//! RFC 5923 §5 lets a server alias only after authenticating the client's certificate
//! against the sent-by host. voxline's listener does not ask TLS clients for certificates, so
//! it aliases only what the connection itself proves: a sent-by that is the connection's own
//! source IP address (the client's listening port on the host that connected). A name, or
//! another address, in the sent-by is not aliased. Nobody can take over another host's
//! address this way: a TCP connection cannot come from an address its opener does not hold.
//!
//! An alias lives as long as its connection: [`SipStack::handle_transport_error`] for that
//! connection forgets it. A later request with `alias` from a new connection replaces it.

use super::*;

/// The default port of a `sips:`/TLS sent-by without one (RFC 3261 §19.1.2).
const DEFAULT_TLS_PORT: u16 = 5061;
/// Most aliases kept (one per TLS client connection; a bound against a flood of them).
const MAX_ALIASES: usize = 4096;

impl SipStack {
    /// Records the alias a request over TLS asks for, if it may be honoured.
    pub(super) fn note_alias(&mut self, peer: Peer, via: &message::ViaInfo) {
        if peer.transport != Transport::Tls || !via.alias {
            return;
        }
        let Ok(ip) = via.host.parse::<IpAddr>() else {
            return;
        };
        if ip != peer.addr.ip() {
            tracing::debug!(%peer, sent_by = %via.host, "Via alias for another address: not honoured");
            return;
        }
        let advertised = SocketAddr::new(ip, via.port.unwrap_or(DEFAULT_TLS_PORT));
        if advertised == peer.addr {
            return;
        }
        if !self.aliases.contains_key(&advertised) && self.aliases.len() >= MAX_ALIASES {
            return;
        }
        self.aliases.insert(advertised, peer.addr);
    }

    /// Where a message for `peer` goes: over the aliased connection when there is one.
    pub(super) fn route_alias(&self, peer: Peer) -> Peer {
        match (peer.transport, self.aliases.get(&peer.addr)) {
            (Transport::Tls, Some(conn)) => Peer {
                transport: Transport::Tls,
                addr: *conn,
            },
            _ => peer,
        }
    }

    /// The connection to `peer` is gone: so are the aliases through it.
    pub(super) fn forget_aliases(&mut self, peer: Peer) {
        if peer.transport == Transport::Tls && !self.aliases.is_empty() {
            self.aliases
                .retain(|advertised, conn| *conn != peer.addr && *advertised != peer.addr);
        }
    }
}
