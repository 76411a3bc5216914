//! Locating SIP servers (RFC 3263), sans-IO part.
//!
//! [`SipTarget::from_uri`] extracts what matters for server location from a SIP URI, and
//! [`SipTarget::plan`] turns it into the [`Lookup`] to perform (RFC 3263 §4):
//!
//! * the target (host, or `maddr`) is an IP literal → use it directly, no DNS;
//! * an explicit port → A/AAAA lookup of the host only;
//! * otherwise → SRV `_sip._udp.<host>` (`_sip._tcp` with `transport=tcp`, `_sips._tcp` for
//!   a `sips:` URI or `transport=tls`); if that yields no records, A/AAAA of the host on port
//!   5060 (5061 for TLS).
//!
//! The SRV records found are ordered with [`order_srv`] (RFC 2782), resolved to addresses, and
//! collected in a [`TargetList`] through which the caller fails over on a transaction timeout,
//! a transport error or a 503 (RFC 3263 §4.3). The DNS queries themselves are done by
//! `crate::runtime::dns`.
//!
//! Not covered: NAPTR (RFC 3263 §4.1 step 1; the transport comes from the URI's `transport`
//! parameter or the `sips:` scheme, or defaults to UDP, and only that transport's SRV name is
//! queried), SCTP/WebSocket transports ([`ResolveError::Unsupported`]), and the server-side
//! procedures of RFC 3263 §5 (locating where to send responses).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use rand::Rng;

/// Default port for `sip:` over UDP and TCP (RFC 3261 §19.1.2, RFC 3263 §4.2).
pub const DEFAULT_SIP_PORT: u16 = 5060;
/// Default port for `sips:` and TLS (RFC 3261 §19.1.2).
pub const DEFAULT_SIPS_PORT: u16 = 5061;

/// Errors from parsing a URI for server location or from resolving it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The URI cannot be parsed.
    #[error("invalid SIP URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The URI asks for something not implemented yet (`sips:`, TLS, SCTP, WebSocket).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The SRV answer is a single record with target `.`: the service is decidedly not
    /// available at this domain (RFC 2782).
    #[error("SIP service decidedly not available at {0} (SRV target \".\")")]
    ServiceUnavailable(String),
    /// The name resolved to no usable address.
    #[error("no addresses found for {0}")]
    NoAddresses(String),
    /// A DNS failure other than "no such records".
    #[error("DNS lookup of {name} failed: {message}")]
    Dns {
        /// The name looked up.
        name: String,
        /// The resolver's error message.
        message: String,
    },
}

/// Transport protocol for reaching a SIP target.
///
/// Minimal local definition; to be unified with the crate-wide SIP transport type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetTransport {
    /// UDP, the default for `sip:` URIs without NAPTR (RFC 3263 §4.1).
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (`sips:` URIs, `transport=tls`).
    Tls,
}

impl TargetTransport {
    /// The `transport` URI parameter value (`udp`, `tcp`, `tls`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// The SRV service-and-protocol prefix (RFC 3263 §4.2): `_sip._udp`, `_sip._tcp`, or
    /// `_sips._tcp` for TLS.
    pub fn srv_prefix(self) -> &'static str {
        match self {
            Self::Udp => "_sip._udp",
            Self::Tcp => "_sip._tcp",
            Self::Tls => "_sips._tcp",
        }
    }

    /// The port when neither the URI nor SRV gives one.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Tls => DEFAULT_SIPS_PORT,
            _ => DEFAULT_SIP_PORT,
        }
    }
}

impl fmt::Display for TargetTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What server location needs from a SIP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipTarget {
    /// Host to resolve: the `maddr` parameter if present, else the URI host. Lower-cased; an
    /// IPv6 literal is stored without brackets.
    pub host: String,
    /// Explicit port, if the URI had one.
    pub port: Option<u16>,
    /// Explicit `transport` parameter, if any.
    pub transport: Option<TargetTransport>,
}

/// The RFC 3263 §4 resolution plan for a [`SipTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The target is an IP literal: no DNS needed.
    Direct(Vec<Candidate>),
    /// Query SRV `name`; if it yields no records, look up A/AAAA of `then_host` on
    /// `default_port`.
    Srv {
        /// SRV owner name, e.g. `_sip._udp.example.com`.
        name: String,
        /// Host for the A/AAAA fallback.
        then_host: String,
        /// Port for the A/AAAA fallback (5060).
        default_port: u16,
        /// Transport of every resulting candidate.
        transport: TargetTransport,
    },
    /// Look up A/AAAA of `host` and use `port` (explicit port: no SRV, RFC 3263 §4.2).
    Host {
        /// Host name to resolve.
        host: String,
        /// Port to use.
        port: u16,
        /// Transport of every resulting candidate.
        transport: TargetTransport,
    },
}

/// A DNS SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SrvRecord {
    /// Lower is tried first.
    pub priority: u16,
    /// Relative weight among records of the same priority.
    pub weight: u16,
    /// Port on the target.
    pub port: u16,
    /// Target host name; `.` means "no service here".
    pub target: String,
}

impl SrvRecord {
    /// Whether the target is `.` (RFC 2782: "service decidedly not available").
    pub fn is_no_service(&self) -> bool {
        self.target.is_empty() || self.target == "."
    }
}

/// One address to try, with the transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Candidate {
    /// Address and port.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: TargetTransport,
}

/// An ordered failover list of [`Candidate`]s (RFC 3263 §4.3).
///
/// Take the first with [`next`](Iterator::next); when it times out, gives a transport error,
/// or answers 503, take the next one. [`peek`](Self::peek) shows what `next` will return.
/// Duplicate candidates are dropped on insertion (the first occurrence keeps its place).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetList {
    candidates: Vec<Candidate>,
    cursor: usize,
}

impl TargetList {
    /// A list with the given candidates in order, duplicates removed.
    pub fn new(candidates: impl IntoIterator<Item = Candidate>) -> Self {
        let mut list = Self::default();
        for c in candidates {
            list.push(c);
        }
        list
    }

    /// Appends a candidate unless it is already in the list.
    pub fn push(&mut self, candidate: Candidate) {
        if !self.candidates.contains(&candidate) {
            self.candidates.push(candidate);
        }
    }

    /// The candidate the next call to `next()` returns, without consuming it.
    pub fn peek(&self) -> Option<&Candidate> {
        self.candidates.get(self.cursor)
    }

    /// How many candidates have not been handed out yet.
    pub fn remaining(&self) -> usize {
        self.candidates.len().saturating_sub(self.cursor)
    }

    /// Total number of candidates, including those already handed out.
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// Whether the list has no candidates at all.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// All candidates in order, including those already handed out.
    pub fn as_slice(&self) -> &[Candidate] {
        &self.candidates
    }
}

impl Iterator for TargetList {
    type Item = Candidate;

    /// Hands out the next candidate to try; `None` when every candidate has failed.
    fn next(&mut self) -> Option<Candidate> {
        let c = *self.candidates.get(self.cursor)?;
        self.cursor += 1;
        Some(c)
    }
}

impl SipTarget {
    /// Parses a `sip:` URI: `sip:user@host:port;transport=tcp;maddr=...`, `sip:host`,
    /// `sip:[::1]:5060`. Headers (`?...`) and other parameters are ignored.
    ///
    /// A `sips:` URI means TLS (RFC 3261 §26.2.2); transports other than UDP, TCP and TLS are
    /// [`ResolveError::Unsupported`].
    pub fn from_uri(uri: &str) -> Result<SipTarget, ResolveError> {
        let invalid = |reason| ResolveError::InvalidUri {
            uri: uri.to_owned(),
            reason,
        };
        let trimmed = uri.trim();
        let (scheme, rest) = trimmed
            .split_once(':')
            .ok_or_else(|| invalid("no scheme"))?;
        let sips = scheme.eq_ignore_ascii_case("sips");
        if !sips && !scheme.eq_ignore_ascii_case("sip") {
            return Err(invalid("scheme is not sip or sips"));
        }
        // userinfo cannot contain an unescaped '@', and neither can params or headers
        // (RFC 3261 §25.1), so the first '@' ends the userinfo.
        let after_user = match rest.split_once('@') {
            Some((_, host_part)) => host_part,
            None => rest,
        };
        let without_headers = after_user.split('?').next().unwrap_or("");
        let mut pieces = without_headers.split(';');
        let hostport = pieces.next().unwrap_or("");
        let (host, port) = parse_hostport(hostport).map_err(invalid)?;

        let mut transport = None;
        let mut maddr = None;
        for param in pieces {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if name.eq_ignore_ascii_case("transport") {
                transport = Some(match value.to_ascii_lowercase().as_str() {
                    "udp" => TargetTransport::Udp,
                    "tcp" => TargetTransport::Tcp,
                    "tls" => TargetTransport::Tls,
                    "" => return Err(invalid("empty transport parameter")),
                    other => {
                        return Err(ResolveError::Unsupported(format!("transport={other}")));
                    }
                });
            } else if name.eq_ignore_ascii_case("maddr") {
                maddr = Some(parse_host(value).map_err(invalid)?);
            }
        }
        if sips && matches!(transport, Some(TargetTransport::Udp)) {
            return Err(invalid("a sips: URI cannot ask for UDP"));
        }
        Ok(SipTarget {
            host: maddr.unwrap_or(host),
            port,
            // sips: is TLS over TCP whatever `transport=tcp` says (RFC 5630 §3.1.3).
            transport: if sips {
                Some(TargetTransport::Tls)
            } else {
                transport
            },
        })
    }

    /// The host as an IP address, if it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// The transport to use: the explicit one, else UDP (RFC 3263 §4.1 without NAPTR).
    pub fn effective_transport(&self) -> TargetTransport {
        self.transport.unwrap_or(TargetTransport::Udp)
    }

    /// The RFC 3263 §4 lookup plan for this target.
    pub fn plan(&self) -> Lookup {
        let transport = self.effective_transport();
        if let Some(ip) = self.ip() {
            let port = self.port.unwrap_or(transport.default_port());
            return Lookup::Direct(vec![Candidate {
                addr: SocketAddr::new(ip, port),
                transport,
            }]);
        }
        match self.port {
            Some(port) => Lookup::Host {
                host: self.host.clone(),
                port,
                transport,
            },
            None => Lookup::Srv {
                name: format!("{}.{}", transport.srv_prefix(), self.host),
                then_host: self.host.clone(),
                default_port: transport.default_port(),
                transport,
            },
        }
    }
}

/// Orders SRV records as RFC 2782 prescribes.
///
/// Ascending priority; within one priority, repeated weighted random selection: the
/// not-yet-ordered records are listed with the weight-0 ones first, a number is drawn uniformly
/// from `0..=sum_of_weights`, and the first record whose running weight sum is `>=` that number
/// comes next. Weight-0 records thus have a small chance (1 in sum+1) of being picked before
/// weighted ones, and when only weight-0 records remain they keep their given order.
/// Records with target `.` are dropped (they carry no address).
pub fn order_srv(records: Vec<SrvRecord>, rng: &mut impl Rng) -> Vec<SrvRecord> {
    let mut records: Vec<SrvRecord> = records.into_iter().filter(|r| !r.is_no_service()).collect();
    // Stable sort: ties keep their order, and weight 0 goes first within a priority.
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let group_len = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        // invariant: group_len counts a prefix of `rest`.
        let (group, tail) = rest.split_at(group_len);
        let mut group = group.to_vec();
        while !group.is_empty() {
            // u64: no overflow for any number of u16 weights a DNS message can carry.
            let sum: u64 = group.iter().map(|r| u64::from(r.weight)).sum();
            let pick = rng.gen_range(0..=sum);
            let mut running = 0u64;
            // invariant: the loop runs only while `group` is non-empty.
            let mut chosen = group.len() - 1;
            for (i, r) in group.iter().enumerate() {
                running += u64::from(r.weight);
                if running >= pick {
                    chosen = i;
                    break;
                }
            }
            // invariant: chosen < group.len() (an enumerate index or len - 1).
            out.push(group.remove(chosen));
        }
        rest = tail;
    }
    out
}

/// Whether an SRV answer says the service is decidedly not available: exactly one record,
/// with target `.` (RFC 2782).
pub fn srv_says_no_service(records: &[SrvRecord]) -> bool {
    matches!(records, [only] if only.is_no_service())
}

// ---------------------------------------------------------------------------------------------
// Private helpers.

/// Parses `host[:port]` or `[v6]:port`.
fn parse_hostport(s: &str) -> Result<(String, Option<u16>), &'static str> {
    if s.is_empty() {
        return Err("empty host");
    }
    let (host, port) = if s.starts_with('[') {
        let end = s.find(']').ok_or("unterminated IPv6 reference")?;
        // invariant: `end` is the index of the one-byte ']', so end + 1 <= len is a char
        // boundary.
        let (host, rest) = s.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("garbage after IPv6 reference"),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err("invalid port");
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err("invalid port"),
                Ok(n) => Some(n),
            }
        }
    };
    Ok((parse_host(host)?, port))
}

/// Validates a host (hostname, IPv4 address or bracketed IPv6 reference) and normalises it.
fn parse_host(s: &str) -> Result<String, &'static str> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or("unterminated IPv6 reference")?;
        let ip: std::net::Ipv6Addr = inner.parse().map_err(|_| "invalid IPv6 address")?;
        return Ok(ip.to_string());
    }
    if s.is_empty() {
        return Err("empty host");
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => Ok(v4.to_string()),
            // RFC 3261 §25.1 requires brackets around IPv6 in a host, but maddr values in
            // the wild sometimes omit them; accept.
            IpAddr::V6(v6) => Ok(v6.to_string()),
        };
    }
    let valid = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !s.starts_with('.')
        && !s.contains("..");
    if !valid {
        return Err("invalid host name");
    }
    Ok(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn target(host: &str, port: Option<u16>, transport: Option<TargetTransport>) -> SipTarget {
        SipTarget {
            host: host.into(),
            port,
            transport,
        }
    }

    #[test]
    fn from_uri_variants() {
        use TargetTransport::*;
        let cases = [
            ("sip:example.com", target("example.com", None, None)),
            ("SIP:Alice@Example.COM", target("example.com", None, None)),
            (
                "sip:alice:pw@pbx.example.com:5070;transport=TCP",
                target("pbx.example.com", Some(5070), Some(Tcp)),
            ),
            (
                "sip:alice@pbx.example.com;lr;transport=udp?subject=hi",
                target("pbx.example.com", None, Some(Udp)),
            ),
            (
                "sip:192.0.2.10:5080",
                target("192.0.2.10", Some(5080), None),
            ),
            ("sip:[::1]", target("::1", None, None)),
            (
                "sip:bob@[2001:DB8::1]:5062",
                target("2001:db8::1", Some(5062), None),
            ),
            (
                "sip:bob@example.com:5070;maddr=192.0.2.99;transport=tcp",
                target("192.0.2.99", Some(5070), Some(Tcp)),
            ),
            ("sip:bob@example.com;maddr=[::2]", target("::2", None, None)),
            (
                "sip:bob@example.com;maddr=Proxy.Example.NET",
                target("proxy.example.net", None, None),
            ),
            // ';' and '?' are legal in the user part.
            (
                "sip:+1555;phone-context=x?y@gw.example.com",
                target("gw.example.com", None, None),
            ),
            (
                "sip:localhost:5080;transport=tcp",
                target("localhost", Some(5080), Some(Tcp)),
            ),
            ("sip:example.com.", target("example.com.", None, None)),
        ];
        for (uri, expected) in cases {
            assert_eq!(SipTarget::from_uri(uri), Ok(expected), "{uri}");
        }
    }

    #[test]
    fn from_uri_errors() {
        let invalid = |uri: &str| {
            matches!(
                SipTarget::from_uri(uri),
                Err(ResolveError::InvalidUri { .. })
            )
        };
        for uri in [
            "",
            "example.com",
            "tel:+15551234",
            "sip:",
            "sip:alice@",
            "sip:host:",
            "sip:host:0",
            "sip:host:65536",
            "sip:host:50a",
            "sip:[::1",
            "sip:[::1]x",
            "sip:[not-v6]",
            "sip:bad host",
            "sip:a..b",
            "sip:host;transport=",
            "sip:host;maddr=",
        ] {
            assert!(invalid(uri), "{uri}: {:?}", SipTarget::from_uri(uri));
        }
        // TLS: sips: and transport=tls; sips: never goes over UDP.
        let t = SipTarget::from_uri("sips:alice@example.com").unwrap();
        assert_eq!(t.transport, Some(TargetTransport::Tls));
        assert_eq!(
            t.plan(),
            Lookup::Srv {
                name: "_sips._tcp.example.com".into(),
                then_host: "example.com".into(),
                default_port: 5061,
                transport: TargetTransport::Tls,
            }
        );
        let t = SipTarget::from_uri("sip:192.0.2.7;transport=tls").unwrap();
        assert_eq!(
            t.plan(),
            Lookup::Direct(vec![Candidate {
                addr: "192.0.2.7:5061".parse().unwrap(),
                transport: TargetTransport::Tls,
            }])
        );
        assert!(SipTarget::from_uri("sips:example.com;transport=udp").is_err());
        assert!(matches!(
            SipTarget::from_uri("sip:example.com;transport=sctp"),
            Err(ResolveError::Unsupported(_))
        ));
    }

    fn plan(uri: &str) -> Lookup {
        SipTarget::from_uri(uri).unwrap().plan()
    }

    #[test]
    fn plan_follows_rfc3263_section_4() {
        use TargetTransport::*;
        assert_eq!(
            plan("sip:127.0.0.1:5070"),
            Lookup::Direct(vec![Candidate {
                addr: "127.0.0.1:5070".parse().unwrap(),
                transport: Udp
            }])
        );
        assert_eq!(
            plan("sip:[::1];transport=tcp"),
            Lookup::Direct(vec![Candidate {
                addr: "[::1]:5060".parse().unwrap(),
                transport: Tcp
            }])
        );
        // maddr that is an IP literal: direct even though the host is a name.
        assert_eq!(
            plan("sip:example.com;maddr=192.0.2.1"),
            Lookup::Direct(vec![Candidate {
                addr: "192.0.2.1:5060".parse().unwrap(),
                transport: Udp
            }])
        );
        assert_eq!(
            plan("sip:pbx.example.com:5080"),
            Lookup::Host {
                host: "pbx.example.com".into(),
                port: 5080,
                transport: Udp
            }
        );
        assert_eq!(
            plan("sip:example.com"),
            Lookup::Srv {
                name: "_sip._udp.example.com".into(),
                then_host: "example.com".into(),
                default_port: 5060,
                transport: Udp
            }
        );
        assert_eq!(
            plan("sip:alice@example.com;transport=tcp"),
            Lookup::Srv {
                name: "_sip._tcp.example.com".into(),
                then_host: "example.com".into(),
                default_port: 5060,
                transport: Tcp
            }
        );
    }

    fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord {
            priority,
            weight,
            port: 5060,
            target: target.into(),
        }
    }

    fn targets(records: &[SrvRecord]) -> Vec<&str> {
        records.iter().map(|r| r.target.as_str()).collect()
    }

    #[test]
    fn order_srv_sorts_by_priority_strictly() {
        let mut rng = StdRng::seed_from_u64(7);
        let records = vec![
            srv(30, 100, "c"),
            srv(10, 1, "a1"),
            srv(20, 0, "b"),
            srv(10, 60000, "a2"),
            srv(30, 0, "c0"),
        ];
        for _ in 0..200 {
            let ordered = order_srv(records.clone(), &mut rng);
            assert_eq!(ordered.len(), 5);
            let prios: Vec<u16> = ordered.iter().map(|r| r.priority).collect();
            let mut sorted = prios.clone();
            sorted.sort();
            assert_eq!(prios, sorted);
            assert_eq!(ordered[2].target, "b");
            let mut first_two = targets(&ordered[..2]);
            first_two.sort();
            assert_eq!(first_two, ["a1", "a2"]);
        }
    }

    #[test]
    fn order_srv_respects_weights_statistically() {
        // Weights 10 and 90, plus a weight-0 record. By RFC 2782's procedure (draw in
        // 0..=100 over the list [zero, w10, w90]):
        //   P(zero first) = 1/101, P(w10 first) = 10/101, P(w90 first) = 90/101.
        let records = vec![srv(1, 90, "w90"), srv(1, 0, "zero"), srv(1, 10, "w10")];
        let mut rng = StdRng::seed_from_u64(0x5eed);
        let runs = 10_000;
        let (mut zero, mut w10, mut w90) = (0u32, 0u32, 0u32);
        let mut zero_last = 0u32;
        for _ in 0..runs {
            let ordered = order_srv(records.clone(), &mut rng);
            match ordered[0].target.as_str() {
                "zero" => zero += 1,
                "w10" => w10 += 1,
                "w90" => w90 += 1,
                other => panic!("unexpected {other}"),
            }
            if ordered[2].target == "zero" {
                zero_last += 1;
            }
        }
        let freq = |n: u32| f64::from(n) / f64::from(runs);
        assert!(
            (freq(zero) - 1.0 / 101.0).abs() < 0.006,
            "zero {}",
            freq(zero)
        );
        assert!(
            (freq(w10) - 10.0 / 101.0).abs() < 0.015,
            "w10 {}",
            freq(w10)
        );
        assert!(
            (freq(w90) - 90.0 / 101.0).abs() < 0.015,
            "w90 {}",
            freq(w90)
        );
        // Zero-weight record last: (90/101)(10/11) + (10/101)(90/91) = 0.9080.
        assert!(
            (freq(zero_last) - 0.9080).abs() < 0.015,
            "zero last {}",
            freq(zero_last)
        );
    }

    #[test]
    fn order_srv_even_weights_and_all_zero() {
        let mut rng = StdRng::seed_from_u64(42);
        let records = vec![srv(1, 50, "a"), srv(1, 50, "b")];
        let a_first = (0..10_000)
            .filter(|_| order_srv(records.clone(), &mut rng)[0].target == "a")
            .count();
        assert!((4_700..=5_300).contains(&a_first), "{a_first}");

        // All weight 0: the draw is always 0, so the given order is kept.
        let zeros = vec![srv(1, 0, "x"), srv(1, 0, "y"), srv(1, 0, "z")];
        for _ in 0..50 {
            assert_eq!(
                targets(&order_srv(zeros.clone(), &mut rng)),
                ["x", "y", "z"]
            );
        }
    }

    #[test]
    fn order_srv_drops_dot_targets() {
        let mut rng = StdRng::seed_from_u64(1);
        assert!(order_srv(vec![srv(0, 0, ".")], &mut rng).is_empty());
        assert!(srv_says_no_service(&[srv(0, 0, ".")]));
        assert!(!srv_says_no_service(&[srv(0, 0, "a")]));
        assert!(!srv_says_no_service(&[]));
        assert_eq!(
            targets(&order_srv(vec![srv(0, 0, "."), srv(1, 0, "a")], &mut rng)),
            ["a"]
        );
        assert!(order_srv(Vec::new(), &mut rng).is_empty());
    }

    fn cand(addr: &str) -> Candidate {
        Candidate {
            addr: addr.parse().unwrap(),
            transport: TargetTransport::Udp,
        }
    }

    #[test]
    fn target_list_fails_over_in_order() {
        let mut list = TargetList::new([
            cand("192.0.2.1:5060"),
            cand("192.0.2.2:5060"),
            cand("192.0.2.1:5060"),
            cand("192.0.2.3:5070"),
        ]);
        assert_eq!(list.len(), 3, "duplicate dropped");
        assert_eq!(list.remaining(), 3);
        assert_eq!(list.peek(), Some(&cand("192.0.2.1:5060")));
        assert_eq!(list.next(), Some(cand("192.0.2.1:5060")));
        // First one timed out: fail over.
        assert_eq!(list.peek(), Some(&cand("192.0.2.2:5060")));
        assert_eq!(list.next(), Some(cand("192.0.2.2:5060")));
        // 503 from the second: fail over again.
        assert_eq!(list.remaining(), 1);
        assert_eq!(list.next(), Some(cand("192.0.2.3:5070")));
        assert_eq!(list.peek(), None);
        assert_eq!(list.next(), None);
        assert_eq!(list.remaining(), 0);
        assert_eq!(list.len(), 3);
        assert!(!list.is_empty());

        let mut same_addr_other_transport = TargetList::default();
        assert!(same_addr_other_transport.is_empty());
        same_addr_other_transport.push(cand("192.0.2.1:5060"));
        same_addr_other_transport.push(Candidate {
            transport: TargetTransport::Tcp,
            ..cand("192.0.2.1:5060")
        });
        assert_eq!(same_addr_other_transport.len(), 2);
    }
}
