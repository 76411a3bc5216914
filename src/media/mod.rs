//! Sans-IO media: RTP/RTCP, jitter buffer, codecs, DTMF.
//!
//! Nothing here touches a socket, tokio or the clock: time-dependent entry points take
//! `now: Instant`. The runtime owns the RTP sockets and paces frames.

pub mod codec;
pub mod dtmf;
pub mod jitter;
pub(crate) mod quality;
pub mod rtcp;
pub mod rtp;
mod spares;
pub mod srtp;
pub mod stream;
pub mod webrtc;

/// Whole ticks of a `rate` Hz clock in `d`, rounded down: `d × rate / 1 s`, exactly, in u64
/// arithmetic. The per-packet paths (arrival times, timestamps) use this rather than
/// `as_nanos()`'s u128, whose division is a library call costing tens of nanoseconds.
/// Saturates beyond u64 (a duration of centuries).
pub(crate) fn ticks_in(d: std::time::Duration, rate: u64) -> u64 {
    // d = s + n/1e9 with n < 1e9: floor(d·rate) = s·rate + floor(n·rate/1e9); n·rate fits
    // in u64 for any rate below 1.8e10 Hz.
    d.as_secs()
        .saturating_mul(rate)
        .saturating_add(u64::from(d.subsec_nanos()).saturating_mul(rate) / 1_000_000_000)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn ticks_in_equals_the_exact_u128_formula() {
        for rate in [8_000u64, 16_000, 48_000, 128_000, 768_000] {
            for ns in [
                0u64,
                1,
                124_999,
                125_000,
                999_999_999,
                1_000_000_000,
                86_399_999_999_999,
                31_557_600_000_000_123,
            ] {
                let d = Duration::from_nanos(ns);
                let exact = d.as_nanos() * u128::from(rate) / 1_000_000_000;
                assert_eq!(
                    u128::from(super::ticks_in(d, rate)),
                    exact,
                    "{ns} ns at {rate} Hz"
                );
            }
        }
    }
}
