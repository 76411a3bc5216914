//! DNS for locating SIP servers (RFC 3263): executes the plan made by
//! [`SipTarget::plan`] with hickory-resolver.
//!
//! * IP literals never touch DNS.
//! * SRV records are queried through hickory and ordered by
//!   [`order_srv`] with the thread RNG. A "no records" answer,
//!   and also a failed SRV query (timeout, unreachable server), fall back to A/AAAA of the host
//!   on port 5060; a lone SRV record with target `.` is
//!   [`ResolveError::ServiceUnavailable`].
//! * A/AAAA go through hickory, which answers `localhost` itself (RFC 6761) and reads
//!   `/etc/hosts` first (`use_hosts_file`, on by default). With the system configuration, if
//!   hickory finds nothing, the system resolver (`getaddrinfo` via [`tokio::net::lookup_host`])
//!   is asked as well, so that other name-service sources (mDNS, LDAP, systemd-resolved) work
//!   too. The default IP strategy applies: IPv4 addresses, or IPv6 when there is no IPv4
//!   address.
//! * SRV names are queried as absolute names (a trailing `.` is added): the search list does
//!   not apply to them. A/AAAA names are queried as given, so short names from the hosts file
//!   or the search list keep working.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioAsyncResolver;
use hickory_resolver::config::{ResolverConfig, ResolverOpts};
use hickory_resolver::error::{ResolveError as HickoryError, ResolveErrorKind};

use crate::sip::resolve::{
    Candidate, Lookup, ResolveError, SipTarget, SrvRecord, TargetList, TargetTransport, order_srv,
    srv_says_no_service,
};

/// A caching DNS resolver for SIP targets. Build one and reuse it: answers are cached for
/// their TTL.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioAsyncResolver,
    /// Whether `getaddrinfo` is asked when hickory finds no address.
    system_fallback: bool,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver configured from the system (`/etc/resolv.conf` on Unix). If that cannot be
    /// read, falls back to hickory's default configuration (public recursive resolvers) and
    /// logs a warning. Addresses hickory cannot find are also asked of the system resolver.
    pub fn from_system_conf() -> Self {
        let (config, opts) = match hickory_resolver::system_conf::read_system_conf() {
            Ok(conf) => conf,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read system DNS configuration; using defaults");
                (ResolverConfig::default(), ResolverOpts::default())
            }
        };
        Self {
            inner: TokioAsyncResolver::tokio(config, opts),
            system_fallback: true,
        }
    }

    /// A resolver with an explicit hickory configuration and nothing else: the system resolver
    /// is never asked (tests point this at a local DNS server).
    pub fn with_config(config: ResolverConfig, opts: ResolverOpts) -> Self {
        Self {
            inner: TokioAsyncResolver::tokio(config, opts),
            system_fallback: false,
        }
    }

    /// Resolves a target into an ordered failover list (RFC 3263 §4). The list is never
    /// empty on success.
    pub async fn resolve(&self, target: &SipTarget) -> Result<TargetList, ResolveError> {
        match target.plan() {
            Lookup::Direct(candidates) => Ok(TargetList::new(candidates)),
            Lookup::Host {
                host,
                port,
                transport,
            } => {
                let ips = self.lookup_addrs(&host).await?;
                Ok(candidates_for(&ips, port, transport))
            }
            Lookup::Srv {
                name,
                then_host,
                default_port,
                transport,
            } => {
                let records = self.lookup_srv(&name).await;
                if srv_says_no_service(&records) {
                    return Err(ResolveError::ServiceUnavailable(name));
                }
                if records.is_empty() {
                    let ips = self.lookup_addrs(&then_host).await?;
                    return Ok(candidates_for(&ips, default_port, transport));
                }
                let ordered = order_srv(records, &mut rand::thread_rng());
                let mut list = TargetList::default();
                for record in &ordered {
                    match self.lookup_addrs(&record.target).await {
                        Ok(ips) => {
                            for ip in ips {
                                list.push(Candidate {
                                    addr: SocketAddr::new(ip, record.port),
                                    transport,
                                });
                            }
                        }
                        Err(e) => {
                            tracing::debug!(target = %record.target, error = %e, "SRV target did not resolve");
                        }
                    }
                }
                if list.is_empty() {
                    return Err(ResolveError::NoAddresses(name));
                }
                Ok(list)
            }
        }
    }

    /// SRV records for `name`; empty when there are none or the query failed.
    async fn lookup_srv(&self, name: &str) -> Vec<SrvRecord> {
        let absolute = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        match self.inner.srv_lookup(absolute).await {
            Ok(lookup) => lookup
                .iter()
                .map(|srv| SrvRecord {
                    priority: srv.priority(),
                    weight: srv.weight(),
                    port: srv.port(),
                    target: srv.target().to_ascii(),
                })
                .collect(),
            Err(e) => {
                if !is_no_records(&e) {
                    tracing::debug!(%name, error = %e, "SRV lookup failed; falling back to A/AAAA");
                }
                Vec::new()
            }
        }
    }

    /// A/AAAA addresses of `host`: hickory (hosts file, localhost, DNS), then, if enabled,
    /// the system resolver.
    async fn lookup_addrs(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let hickory_err = match self.inner.lookup_ip(host).await {
            Ok(lookup) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if !ips.is_empty() {
                    return Ok(ips);
                }
                None
            }
            Err(e) => Some(e),
        };
        if self.system_fallback {
            let system: Vec<IpAddr> = match tokio::net::lookup_host((host, 0)).await {
                Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                Err(_) => Vec::new(),
            };
            if !system.is_empty() {
                return Ok(dedup(system));
            }
        }
        match hickory_err {
            Some(e) if !is_no_records(&e) => Err(ResolveError::Dns {
                name: host.to_owned(),
                message: e.to_string(),
            }),
            _ => Err(ResolveError::NoAddresses(host.to_owned())),
        }
    }
}

/// Resolves a target with a one-off resolver built from the system configuration.
///
/// Prefer keeping a [`Resolver`] around so that answers are cached.
pub async fn resolve(target: &SipTarget) -> Result<TargetList, ResolveError> {
    let list = Resolver::from_system_conf().resolve(target).await?;
    // A TLS server proves the domain of the URI, not the SRV target (RFC 5922 §4.1).
    if target.ip().is_none() {
        for c in list.as_slice() {
            if c.transport == TargetTransport::Tls {
                super::tls::remember_name(c.addr, &target.host);
            }
        }
    }
    Ok(list)
}

// ---------------------------------------------------------------------------------------------
// Private helpers.

fn candidates_for(ips: &[IpAddr], port: u16, transport: TargetTransport) -> TargetList {
    TargetList::new(ips.iter().map(|ip| Candidate {
        addr: SocketAddr::new(*ip, port),
        transport,
    }))
}

fn is_no_records(e: &HickoryError) -> bool {
    matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. })
}

/// Removes repeated addresses (getaddrinfo returns one per socket type), keeping order.
fn dedup(ips: Vec<IpAddr>) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::with_capacity(ips.len());
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
