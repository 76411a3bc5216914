//! RTP sockets: an even port for RTP and, without rtcp-mux, the next odd one for RTCP
//! (RFC 3550 §11), taken from the configured range and bound at once so the port in the SDP is
//! really ours.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

use super::out_of_descriptors;

/// No port pair could be bound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RtpPortError {
    /// Every even port in the range is in use (by us or by another program).
    #[error("no free RTP port in {min}..{max}")]
    Exhausted {
        /// Range start.
        min: u16,
        /// Range end.
        max: u16,
    },
    /// The process has no file descriptor left for a socket (EMFILE/ENFILE): the port range
    /// is not the problem.
    #[error("out of file descriptors: no socket can be opened ({0})")]
    OutOfDescriptors(std::io::Error),
}

/// Hands out bound RTP (and RTCP) sockets round-robin from `[min, max)`.
#[derive(Debug, Clone)]
pub struct RtpPorts {
    inner: Arc<Mutex<PortState>>,
    bind_ip: IpAddr,
}

#[derive(Debug)]
struct PortState {
    min: u16,
    max: u16,
    next: u16,
    in_use: HashSet<u16>,
}

/// A bound RTP socket (and RTCP socket unless muxed). The port returns to the pool on drop.
#[derive(Debug)]
pub struct RtpSockets {
    /// RTP.
    pub rtp: UdpSocket,
    /// RTCP on port + 1, if not muxed.
    pub rtcp: Option<UdpSocket>,
    /// The RTP port.
    pub port: u16,
    pool: Arc<Mutex<PortState>>,
}

impl Drop for RtpSockets {
    fn drop(&mut self) {
        if let Ok(mut s) = self.pool.lock() {
            s.in_use.remove(&self.port);
        }
    }
}

impl RtpPorts {
    /// A pool over `[min, max)` binding on `bind_ip` (usually `0.0.0.0`). It hands out pairs
    /// in turn from a random one: a voxline restarted (or a second one on the range) does not
    /// give its first calls the ports the last calls had, so a stream still aimed at one of
    /// those does not land in a new call.
    pub fn new(bind_ip: IpAddr, min: u16, max: u16) -> Self {
        let min = min.saturating_add(min % 2);
        let slots = max.saturating_sub(min).div_ceil(2).max(1);
        let first = min.saturating_add(2 * (rand::random::<u16>() % slots));
        RtpPorts {
            inner: Arc::new(Mutex::new(PortState {
                min,
                max,
                next: if first >= max { min } else { first },
                in_use: HashSet::new(),
            })),
            bind_ip,
        }
    }

    /// Binds the next free pair. Ports another program holds are skipped.
    pub fn allocate(&self, with_rtcp: bool) -> Result<RtpSockets, RtpPortError> {
        let mut st = self
            .inner
            .lock()
            .map_err(|_| RtpPortError::Exhausted { min: 0, max: 0 })?;
        let slots = usize::from(st.max.saturating_sub(st.min)).div_ceil(2);
        for _ in 0..slots {
            let port = st.next;
            st.next = if port.saturating_add(2) >= st.max {
                st.min
            } else {
                port + 2
            };
            if st.in_use.contains(&port) {
                continue;
            }
            let rtp = match UdpSocket::bind(SocketAddr::new(self.bind_ip, port)) {
                Ok(s) => s,
                Err(e) if out_of_descriptors(&e) => return Err(RtpPortError::OutOfDescriptors(e)),
                Err(_) => continue,
            };
            let rtcp = if with_rtcp {
                match UdpSocket::bind(SocketAddr::new(self.bind_ip, port + 1)) {
                    Ok(s) => Some(s),
                    Err(e) if out_of_descriptors(&e) => {
                        return Err(RtpPortError::OutOfDescriptors(e));
                    }
                    Err(_) => continue,
                }
            } else {
                None
            };
            st.in_use.insert(port);
            return Ok(RtpSockets {
                rtp,
                rtcp,
                port,
                pool: self.inner.clone(),
            });
        }
        Err(RtpPortError::Exhausted {
            min: st.min,
            max: st.max,
        })
    }

    /// Ports in use.
    pub fn in_use(&self) -> usize {
        self.inner.lock().map(|s| s.in_use.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_even_pairs_skips_taken_ports_and_recycles() {
        let base = 31000;
        let blocker = UdpSocket::bind(("127.0.0.1", base)).expect("bind blocker");
        // Whatever pair the pool starts at, it skips the one another socket holds.
        let pool = RtpPorts::new("127.0.0.1".parse().expect("ip"), base, base + 6);
        let a = pool.allocate(true).expect("a pair");
        assert!(
            a.port == base + 2 || a.port == base + 4,
            "the port another socket holds is skipped: {}",
            a.port
        );
        assert_eq!(
            a.rtcp
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .map(|x| x.port()),
            Some(a.port + 1)
        );
        let b = pool.allocate(false).expect("another");
        assert_eq!(
            b.port,
            if a.port == base + 2 {
                base + 4
            } else {
                base + 2
            }
        );
        assert!(pool.allocate(false).is_err(), "range exhausted");
        let freed = a.port;
        drop(a);
        assert_eq!(pool.allocate(false).expect("recycled").port, freed);
        drop(blocker);
    }

    #[test]
    fn pools_start_at_different_pairs() {
        // 20 pools over 1,000 pairs all starting at the same pair: 1 in 10^57.
        let firsts: HashSet<u16> = (0..20)
            .map(|_| {
                let pool = RtpPorts::new("127.0.0.1".parse().expect("ip"), 40000, 42000);
                pool.inner.lock().expect("lock").next
            })
            .collect();
        assert!(firsts.len() > 1, "every pool starts at {firsts:?}");
        assert!(
            firsts
                .iter()
                .all(|p| p % 2 == 0 && (40000..42000).contains(p))
        );
    }
}
