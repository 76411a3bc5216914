//! RTP port allocation: even ports from a configured range (RFC 3550 §11: RTP on an even
//! port, RTCP on the next odd one).

use std::collections::HashSet;

/// No port could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Every even port in the range is taken.
    #[error("all {0} RTP ports are in use")]
    Exhausted(usize),
}

/// Hands out even ports round-robin from `[min, max)`.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    min: u16,
    max: u16,
    next: u16,
    in_use: HashSet<u16>,
}

impl PortAllocator {
    /// A range; `min` is rounded up to even. An empty range is allowed and always exhausted.
    pub fn new(min: u16, max: u16) -> Self {
        let min = min.saturating_add(min % 2);
        PortAllocator {
            min,
            max,
            next: min,
            in_use: HashSet::new(),
        }
    }

    fn capacity(&self) -> usize {
        usize::from(self.max.saturating_sub(self.min)).div_ceil(2)
    }

    /// Takes a free even port.
    pub fn allocate(&mut self) -> Result<u16, PortError> {
        let cap = self.capacity();
        for _ in 0..cap {
            let p = self.next;
            self.next = if p.saturating_add(2) >= self.max {
                self.min
            } else {
                p + 2
            };
            if self.in_use.insert(p) {
                return Ok(p);
            }
        }
        Err(PortError::Exhausted(cap))
    }

    /// Gives a port back.
    pub fn release(&mut self, port: u16) {
        self.in_use.remove(&port);
    }

    /// Ports in use.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_even_ports_and_exhausts() {
        let mut a = PortAllocator::new(10001, 10008);
        let got: Vec<u16> = (0..3).map(|_| a.allocate().expect("free")).collect();
        assert_eq!(got, vec![10002, 10004, 10006]);
        assert_eq!(a.allocate(), Err(PortError::Exhausted(3)));
        a.release(10004);
        assert_eq!(a.allocate(), Ok(10004));
    }
}
