//! Media direction attributes (RFC 4566 §6, RFC 3264 §5.1 and §6.1).

use std::fmt;
use std::str::FromStr;

/// A media stream's direction, as seen by the side whose SDP carries it.
///
/// An absent direction attribute means [`Direction::SendRecv`] (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Direction {
    /// `a=sendrecv`: send and receive.
    #[default]
    SendRecv,
    /// `a=sendonly`: send only (typically: the other side is put on hold).
    SendOnly,
    /// `a=recvonly`: receive only.
    RecvOnly,
    /// `a=inactive`: neither send nor receive.
    Inactive,
}

impl Direction {
    /// The direction with sending and receiving swapped: what the other side does when this
    /// side does `self` (sendonly <-> recvonly; sendrecv and inactive stay), RFC 3264 §6.1.
    pub const fn reverse(self) -> Self {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }

    /// Whether this side sends media.
    pub const fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether this side receives media.
    pub const fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }

    /// The direction that sends iff `sends` and receives iff `receives`.
    pub const fn from_flags(sends: bool, receives: bool) -> Self {
        match (sends, receives) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }

    /// Our direction given what we want (`self`) and the peer's direction `remote`: we send only
    /// if we want to and the peer receives, and receive only if we want to and the peer sends
    /// (RFC 3264 §6.1).
    pub const fn negotiate(self, remote: Direction) -> Self {
        Direction::from_flags(
            self.sends() && remote.receives(),
            self.receives() && remote.sends(),
        )
    }

    /// The SDP attribute name: `sendrecv`, `sendonly`, `recvonly` or `inactive`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Direction {
    type Err = UnknownDirection;

    /// Parses an SDP direction attribute name, case-insensitively.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str().eq_ignore_ascii_case(s))
        .ok_or_else(|| UnknownDirection(s.to_owned()))
    }
}

/// A string that is not an SDP direction attribute name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown media direction '{0}'")]
pub struct UnknownDirection(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_swaps_send_and_receive() {
        assert_eq!(Direction::SendOnly.reverse(), Direction::RecvOnly);
        assert_eq!(Direction::RecvOnly.reverse(), Direction::SendOnly);
        assert_eq!(Direction::SendRecv.reverse(), Direction::SendRecv);
        assert_eq!(Direction::Inactive.reverse(), Direction::Inactive);
    }

    #[test]
    fn flags_round_trip() {
        for d in [
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ] {
            assert_eq!(Direction::from_flags(d.sends(), d.receives()), d);
            assert_eq!(d.as_str().parse::<Direction>(), Ok(d));
        }
        assert!(Direction::SendOnly.sends());
        assert!(!Direction::SendOnly.receives());
    }

    #[test]
    fn negotiate_follows_rfc3264_6_1() {
        use Direction::*;
        assert_eq!(SendRecv.negotiate(SendOnly), RecvOnly);
        assert_eq!(SendRecv.negotiate(RecvOnly), SendOnly);
        assert_eq!(SendRecv.negotiate(Inactive), Inactive);
        assert_eq!(SendRecv.negotiate(SendRecv), SendRecv);
        assert_eq!(RecvOnly.negotiate(RecvOnly), Inactive);
        assert_eq!(SendOnly.negotiate(SendRecv), SendOnly);
    }

    #[test]
    fn parse_is_case_insensitive() {
        assert_eq!("SendOnly".parse::<Direction>(), Ok(Direction::SendOnly));
        assert!("hold".parse::<Direction>().is_err());
    }
}
