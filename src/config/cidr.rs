//! A small IPv4/IPv6 network prefix (`192.0.2.0/24`, `2001:db8::/32`, or a single address).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP network in CIDR notation, as used by `trunk.allow_from`.
///
/// Host bits below the prefix are cleared when the value is built, so `192.0.2.7/24`
/// and `192.0.2.0/24` are the same network. A bare address is a `/32` (IPv4) or
/// `/128` (IPv6) network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a text is not a valid [`Cidr`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The part before `/` is not an IPv4 or IPv6 address.
    #[error("\"{0}\" is not an IP address")]
    BadAddress(String),
    /// The part after `/` is not a number.
    #[error("\"{0}\" is not a prefix length")]
    BadPrefix(String),
    /// The prefix length is larger than the address has bits.
    #[error("prefix length {prefix} is longer than {max}")]
    PrefixTooLong {
        /// The prefix length given.
        prefix: u8,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
}

impl Cidr {
    /// Builds the network `addr/prefix`, clearing host bits.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, CidrError> {
        let addr = addr.to_canonical();
        let max = max_prefix(addr);
        if prefix > max {
            return Err(CidrError::PrefixTooLong { prefix, max });
        }
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask_v4(prefix))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask_v6(prefix))),
        };
        Ok(Cidr { network, prefix })
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` lies inside this network. IPv4-mapped IPv6 addresses
    /// (`::ffff:192.0.2.1`, as seen on dual-stack sockets) match IPv4 networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & mask_v4(self.prefix) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & mask_v6(self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

impl From<IpAddr> for Cidr {
    /// The single-address network of `ip` (`/32` or `/128`).
    fn from(ip: IpAddr) -> Cidr {
        let ip = ip.to_canonical();
        Cidr {
            network: ip,
            prefix: max_prefix(ip),
        }
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| CidrError::BadAddress(addr_text.to_owned()))?;
        let prefix = match prefix_text {
            Some(p) => p
                .parse::<u8>()
                .map_err(|_| CidrError::BadPrefix(p.to_owned()))?,
            None => max_prefix(addr.to_canonical()),
        };
        Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_network_contains_its_hosts_only() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains(ip("192.0.2.0")));
        assert!(c.contains(ip("192.0.2.255")));
        assert!(!c.contains(ip("192.0.3.1")));
        assert!(!c.contains(ip("2001:db8::1")));
    }

    #[test]
    fn host_bits_are_cleared() {
        let c: Cidr = "192.0.2.77/28".parse().unwrap();
        assert_eq!(c.to_string(), "192.0.2.64/28");
        assert!(c.contains(ip("192.0.2.79")));
        assert!(!c.contains(ip("192.0.2.80")));
    }

    #[test]
    fn bare_address_is_single_host() {
        let c: Cidr = "198.51.100.7".parse().unwrap();
        assert_eq!(c.prefix(), 32);
        assert!(c.contains(ip("198.51.100.7")));
        assert!(!c.contains(ip("198.51.100.8")));
        let c6: Cidr = "2001:db8::5".parse().unwrap();
        assert_eq!(c6.prefix(), 128);
        assert!(c6.contains(ip("2001:db8::5")));
        assert!(!c6.contains(ip("2001:db8::6")));
    }

    #[test]
    fn zero_prefix_matches_everything_of_that_family() {
        let any4: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(any4.contains(ip("203.0.113.1")));
        assert!(!any4.contains(ip("::1")));
        let any6: Cidr = "::/0".parse().unwrap();
        assert!(any6.contains(ip("2001:db8::1")));
    }

    #[test]
    fn v6_prefix() {
        let c: Cidr = "2001:db8:abcd::/48".parse().unwrap();
        assert!(c.contains(ip("2001:db8:abcd:12::1")));
        assert!(!c.contains(ip("2001:db8:abce::1")));
    }

    #[test]
    fn v4_mapped_v6_source_matches_v4_network() {
        let c: Cidr = "192.0.2.0/24".parse().unwrap();
        assert!(c.contains(ip("::ffff:192.0.2.9")));
        let mapped: Cidr = "::ffff:192.0.2.9".parse().unwrap();
        assert_eq!(mapped.to_string(), "192.0.2.9/32");
    }

    #[test]
    fn errors() {
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix: 33,
                max: 32
            })
        );
        assert_eq!(
            "10.0.0/8".parse::<Cidr>(),
            Err(CidrError::BadAddress("10.0.0".into()))
        );
        assert_eq!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(CidrError::BadPrefix("x".into()))
        );
        assert_eq!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong {
                prefix: 129,
                max: 128
            })
        );
    }
}
