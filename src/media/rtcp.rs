//! RTCP (RFC 3550 §6): parsing and building compound packets, round-trip time, and the
//! report scheduler. Sans-IO: NTP time comes from the caller through an [`NtpClock`].
//!
//! * [`parse_compound`] reads SR, RR, SDES (CNAME only), BYE and skips any other packet type;
//!   it returns a typed [`RtcpError`] for malformed input and never panics.
//! * [`CompoundReport::write`] builds SR or RR + SDES CNAME into a caller buffer;
//!   [`write_bye`] appends a BYE.
//! * [`round_trip_time`] computes the RTT from a report block's LSR/DLSR (§6.4.1).
//! * [`RtcpScheduler`] says when the next report is due (§6.2/§6.3, seeded randomisation).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::media::rtp::{RtpTimestamp, Ssrc};

/// RTCP version, the same as RTP's (RFC 3550 §6.4.1).
pub const RTCP_VERSION: u8 = 2;

/// Length of the common RTCP header (V/P/count, PT, length) in bytes (RFC 3550 §6.4.1).
pub const RTCP_HEADER_LEN: usize = 4;

/// Packet type of a sender report (RFC 3550 §6.4.1).
pub const PT_SR: u8 = 200;
/// Packet type of a receiver report (RFC 3550 §6.4.2).
pub const PT_RR: u8 = 201;
/// Packet type of source description items (RFC 3550 §6.5).
pub const PT_SDES: u8 = 202;
/// Packet type of a goodbye (RFC 3550 §6.6).
pub const PT_BYE: u8 = 203;
/// Packet type of an application-defined packet (RFC 3550 §6.7).
pub const PT_APP: u8 = 204;

/// SDES item type of CNAME (RFC 3550 §6.5.1).
pub const SDES_CNAME: u8 = 1;

/// Length of the sender info in an SR, in bytes (RFC 3550 §6.4.1).
pub const SENDER_INFO_LEN: usize = 20;

/// Length of one report block in bytes (RFC 3550 §6.4.1).
pub const REPORT_BLOCK_LEN: usize = 24;

/// Most report blocks in one SR/RR: the count field is 5 bits (RFC 3550 §6.4.1).
pub const MAX_REPORT_BLOCKS: usize = 31;

/// Minimum report interval Tmin (RFC 3550 §6.2): for a two-party audio call the
/// bandwidth-derived interval is always below it, so this is the interval used.
pub const RTCP_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970) (RFC 5905 §6).
pub const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp: seconds since 1900 in the high 32 bits, fraction in the low 32
/// (RFC 3550 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NtpTime(pub(crate) u64);

impl NtpTime {
    /// Wraps a raw value.
    pub const fn new(v: u64) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for NtpTime {
    fn from(v: u64) -> Self {
        Self(v)
    }
}

impl NtpTime {
    /// The NTP time `since_unix_epoch` after 1970-01-01 (e.g. from `SystemTime`).
    pub fn from_unix(since_unix_epoch: Duration) -> Self {
        Self::from_duration(since_unix_epoch + Duration::from_secs(NTP_UNIX_OFFSET_SECS))
    }

    /// The NTP time `d` after 1900-01-01 (wraps after 2^32 s, as NTP does).
    pub fn from_duration(d: Duration) -> Self {
        let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
        Self((d.as_secs() << 32) | frac)
    }

    /// The middle 32 bits, as carried in LSR (RFC 3550 §6.4.1): units of 1/65536 s.
    pub const fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }

    /// This time advanced by `d`, wrapping.
    pub fn add_duration(self, d: Duration) -> Self {
        Self(self.0.wrapping_add(Self::from_duration(d).0))
    }

    /// This time moved back by `d`, wrapping.
    pub fn sub_duration(self, d: Duration) -> Self {
        Self(self.0.wrapping_sub(Self::from_duration(d).0))
    }
}

/// The caller's mapping from the monotonic clock to NTP wall-clock time: an [`Instant`] and
/// the NTP time at that instant (taken once, e.g. at call start, by the runtime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtpClock {
    anchor: Instant,
    ntp_at_anchor: NtpTime,
}

impl NtpClock {
    /// `ntp_at_anchor` was the NTP time at `anchor`.
    pub fn new(anchor: Instant, ntp_at_anchor: NtpTime) -> Self {
        Self {
            anchor,
            ntp_at_anchor,
        }
    }

    /// NTP time at `now`.
    pub fn ntp(&self, now: Instant) -> NtpTime {
        if now >= self.anchor {
            self.ntp_at_anchor.add_duration(now - self.anchor)
        } else {
            self.ntp_at_anchor.sub_duration(self.anchor - now)
        }
    }

    /// Round-trip time to the source that sent `block` about us, which arrived at `now`
    /// (RFC 3550 §6.4.1); `None` if it carries no LSR yet or the result is negative.
    pub fn round_trip_time(&self, now: Instant, block: &ReportBlock) -> Option<Duration> {
        round_trip_time(self.ntp(now), block)
    }
}

/// Round-trip time from a report block about our stream that arrived at NTP time `arrival`:
/// `A - LSR - DLSR` in units of 1/65536 s (RFC 3550 §6.4.1). `None` if LSR is 0 (no SR from
/// us seen yet) or the difference is negative (clock trouble).
pub fn round_trip_time(arrival: NtpTime, block: &ReportBlock) -> Option<Duration> {
    if block.lsr == 0 {
        return None;
    }
    let since_sr = arrival.middle32().wrapping_sub(block.lsr);
    // A value with the top bit set means the arrival precedes the SR: negative.
    if since_sr >= 0x8000_0000 || since_sr < block.dlsr {
        return None;
    }
    let units = u64::from(since_sr - block.dlsr);
    Some(Duration::from_nanos(units * 1_000_000_000 / 65536))
}

/// The sender info of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    /// Wall-clock time when the report was sent.
    pub ntp: NtpTime,
    /// RTP timestamp corresponding to the same instant.
    pub rtp_ts: RtpTimestamp,
    /// Packets sent since starting transmission.
    pub packet_count: u32,
    /// Payload octets sent since starting transmission.
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source this block is about.
    pub ssrc: Ssrc,
    /// Fraction lost since the previous report, in 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost: 24-bit signed.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub ext_highest_seq: u32,
    /// Interarrival jitter in timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR from that source, 0 if none.
    pub lsr: u32,
    /// Delay since that SR in 1/65536 s, 0 if none.
    pub dlsr: u32,
}

impl ReportBlock {
    /// Largest cumulative loss the 24-bit signed field carries (RFC 3550 §6.4.1).
    pub const MAX_CUMULATIVE_LOST: i32 = 0x7f_ffff;
    /// Smallest cumulative loss the 24-bit signed field carries.
    pub const MIN_CUMULATIVE_LOST: i32 = -0x80_0000;
}

/// One SDES chunk: a source and its CNAME if the chunk has one (other items are skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The source described.
    pub ssrc: Ssrc,
    /// The CNAME item's text.
    pub cname: Option<&'a [u8]>,
}

/// One packet of a compound RTCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// A sender report (PT 200).
    SenderReport {
        /// The sender.
        ssrc: Ssrc,
        /// What it sent.
        info: SenderInfo,
        /// What it received.
        reports: Vec<ReportBlock>,
    },
    /// A receiver report (PT 201).
    ReceiverReport {
        /// The reporter.
        ssrc: Ssrc,
        /// What it received.
        reports: Vec<ReportBlock>,
    },
    /// Source description (PT 202).
    SourceDescription(Vec<SdesChunk<'a>>),
    /// Goodbye (PT 203): these sources leave.
    Bye {
        /// The sources leaving.
        ssrcs: Vec<Ssrc>,
        /// The optional reason text.
        reason: Option<&'a [u8]>,
    },
    /// Any other packet type (APP, feedback, XR, ...), not interpreted.
    Other {
        /// The packet type.
        packet_type: u8,
        /// The 5-bit count/subtype field.
        count: u8,
        /// The body after the common header, without padding.
        body: &'a [u8],
    },
}

/// Why bytes are not a valid compound RTCP packet, or a report does not fit its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    /// Empty datagram.
    #[error("empty RTCP packet")]
    Empty,
    /// Fewer bytes than a common header or than the packet type needs.
    #[error("RTCP packet type {packet_type} truncated")]
    Truncated {
        /// The packet type (0 if even the header is cut).
        packet_type: u8,
    },
    /// Version not 2.
    #[error("RTCP version {0}, expected {RTCP_VERSION}")]
    BadVersion(u8),
    /// The length field runs past the datagram.
    #[error("RTCP length field runs past the datagram")]
    BadLength,
    /// Padding on a packet other than the last, or a padding count that does not fit.
    #[error("invalid RTCP padding")]
    BadPadding,
    /// More than [`MAX_REPORT_BLOCKS`] report blocks, or an SDES/BYE text over 255 bytes.
    #[error("too many report blocks or text too long")]
    TooLarge,
    /// The output buffer is too small.
    #[error("buffer of {available} bytes is too small, {needed} needed")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// Whether a datagram on a muxed RTP/RTCP port is RTCP: its second byte is 192..=223
/// (RFC 5761 §4).
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|b| (192..=223).contains(b))
}

/// Parses a compound RTCP packet (RFC 3550 §6.1, validity checks of appendix A.2 except that
/// the first packet need not be SR/RR, so reduced-size RTCP of RFC 5506 is accepted).
pub fn parse_compound(buf: &[u8]) -> Result<Vec<RtcpPacket<'_>>, RtcpError> {
    if buf.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let Some(hdr) = rest.first_chunk::<RTCP_HEADER_LEN>() else {
            return Err(RtcpError::Truncated { packet_type: 0 });
        };
        let version = hdr[0] >> 6;
        if version != RTCP_VERSION {
            return Err(RtcpError::BadVersion(version));
        }
        let padded = hdr[0] & 0x20 != 0;
        let count = hdr[0] & 0x1f;
        let packet_type = hdr[1];
        let len = (usize::from(u16::from_be_bytes([hdr[2], hdr[3]])) + 1) * 4;
        let Some((packet, after)) = rest.split_at_checked(len) else {
            return Err(RtcpError::BadLength);
        };
        let mut body = packet.get(RTCP_HEADER_LEN..).unwrap_or(&[]);
        if padded {
            // Only the last packet of a compound may be padded (RFC 3550 §6.4.1).
            if !after.is_empty() {
                return Err(RtcpError::BadPadding);
            }
            let pad = usize::from(body.last().copied().unwrap_or(0));
            if pad == 0 || pad > body.len() {
                return Err(RtcpError::BadPadding);
            }
            body = body.get(..body.len() - pad).ok_or(RtcpError::BadPadding)?;
        }
        out.push(parse_one(packet_type, count, body)?);
        rest = after;
    }
    Ok(out)
}

/// What [`CompoundReport::write`] puts in a compound packet: an SR if `sender` is set (we sent
/// RTP since the last report), else an RR, then an SDES with our CNAME.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompoundReport<'a> {
    /// Our SSRC.
    pub ssrc: Ssrc,
    /// Our sender info, if we are a sender.
    pub sender: Option<SenderInfo>,
    /// Reception report blocks (at most [`MAX_REPORT_BLOCKS`]).
    pub blocks: &'a [ReportBlock],
    /// Our CNAME (at most 255 bytes).
    pub cname: &'a str,
}

impl CompoundReport<'_> {
    /// Bytes [`CompoundReport::write`] needs.
    pub fn len(&self) -> usize {
        let report = RTCP_HEADER_LEN
            + 4
            + if self.sender.is_some() {
                SENDER_INFO_LEN
            } else {
                0
            }
            + self.blocks.len() * REPORT_BLOCK_LEN;
        report + sdes_len(self.cname.len())
    }

    /// Whether the report is empty: never (it always has a header); for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes SR/RR + SDES CNAME into `buf`; returns the length written.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, RtcpError> {
        if self.blocks.len() > MAX_REPORT_BLOCKS || self.cname.len() > 255 {
            return Err(RtcpError::TooLarge);
        }
        let needed = self.len();
        let available = buf.len();
        let Some(out) = buf.get_mut(..needed) else {
            return Err(RtcpError::BufferTooSmall { needed, available });
        };
        let mut w = Writer { buf: out, pos: 0 };
        let report_len = needed - sdes_len(self.cname.len());
        let pt = if self.sender.is_some() { PT_SR } else { PT_RR };
        // invariant: blocks.len() <= 31 checked above, so it fits the 5-bit count.
        w.header(self.blocks.len() as u8, pt, report_len);
        w.u32(self.ssrc.0);
        if let Some(info) = self.sender {
            w.u32((info.ntp.0 >> 32) as u32);
            w.u32(info.ntp.0 as u32);
            w.u32(info.rtp_ts.0);
            w.u32(info.packet_count);
            w.u32(info.octet_count);
        }
        for b in self.blocks {
            w.u32(b.ssrc.0);
            let lost = b.cumulative_lost.clamp(
                ReportBlock::MIN_CUMULATIVE_LOST,
                ReportBlock::MAX_CUMULATIVE_LOST,
            );
            w.u32((u32::from(b.fraction_lost) << 24) | (lost as u32 & 0x00ff_ffff));
            w.u32(b.ext_highest_seq);
            w.u32(b.jitter);
            w.u32(b.lsr);
            w.u32(b.dlsr);
        }
        // SDES: one chunk, CNAME item, null terminator, zero-padded to 32 bits.
        w.header(1, PT_SDES, sdes_len(self.cname.len()));
        w.u32(self.ssrc.0);
        w.u8(SDES_CNAME);
        // invariant: cname.len() <= 255 checked above.
        w.u8(self.cname.len() as u8);
        w.bytes(self.cname.as_bytes());
        while w.pos < needed {
            w.u8(0);
        }
        Ok(needed)
    }
}

/// Writes a BYE for `ssrc` with an optional reason into `buf` (to be appended as the last
/// packet of a compound, RFC 3550 §6.6); returns the length written.
pub fn write_bye(buf: &mut [u8], ssrc: Ssrc, reason: Option<&str>) -> Result<usize, RtcpError> {
    let reason_len = reason.map_or(0, str::len);
    if reason_len > 255 {
        return Err(RtcpError::TooLarge);
    }
    let text = reason.map_or(0, |r| (1 + r.len()).div_ceil(4) * 4);
    let needed = RTCP_HEADER_LEN + 4 + text;
    let available = buf.len();
    let Some(out) = buf.get_mut(..needed) else {
        return Err(RtcpError::BufferTooSmall { needed, available });
    };
    let mut w = Writer { buf: out, pos: 0 };
    w.header(1, PT_BYE, needed);
    w.u32(ssrc.0);
    if let Some(r) = reason {
        // invariant: checked <= 255 above.
        w.u8(r.len() as u8);
        w.bytes(r.as_bytes());
        while w.pos < needed {
            w.u8(0);
        }
    }
    Ok(needed)
}

/// Decides when the next RTCP report is due (RFC 3550 §6.2, §6.3.5): every
/// [`RTCP_MIN_INTERVAL`] (or the configured interval) times a random factor in [0.5, 1.5),
/// the first one after half an interval. Seeded, so tests are reproducible.
///
/// Not implemented: the bandwidth/membership-based interval (irrelevant for one peer: it is
/// below Tmin), timer reconsideration and its e-3/2 compensation, and BYE back-off.
#[derive(Debug, Clone)]
pub struct RtcpScheduler {
    interval: Duration,
    rng: StdRng,
    next: Instant,
}

impl RtcpScheduler {
    /// A scheduler with the default 5 s interval, starting at `now`.
    pub fn new(now: Instant, seed: u64) -> Self {
        Self::with_interval(now, seed, RTCP_MIN_INTERVAL)
    }

    /// A scheduler with the deterministic interval `interval`, starting at `now`.
    pub fn with_interval(now: Instant, seed: u64, interval: Duration) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        // §6.2: "the delay before sending the first compound RTCP packet MAY be set to half".
        let first = randomize(&mut rng, interval / 2);
        Self {
            interval,
            rng,
            next: now + first,
        }
    }

    /// When the next report is due.
    pub fn next_due(&self) -> Instant {
        self.next
    }

    /// Whether a report is due at `now`; if so, the next one is scheduled from `now` and the
    /// caller sends a report.
    pub fn poll(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + randomize(&mut self.rng, self.interval);
        true
    }
}

fn randomize(rng: &mut StdRng, interval: Duration) -> Duration {
    interval.mul_f64(rng.gen_range(0.5..1.5))
}

fn sdes_len(cname_len: usize) -> usize {
    // header + SSRC + type + length + text + at least one null octet, padded to 4.
    RTCP_HEADER_LEN + (4 + 2 + cname_len + 1).div_ceil(4) * 4
}

struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
}

impl Writer<'_> {
    // The callers size `buf` exactly beforehand; `get_mut` keeps an arithmetic slip from
    // panicking (it would leave bytes unwritten, caught by the tests).
    fn bytes(&mut self, b: &[u8]) {
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + b.len()) {
            dst.copy_from_slice(b);
        }
        self.pos += b.len();
    }
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    fn header(&mut self, count: u8, pt: u8, len_bytes: usize) {
        self.u8((RTCP_VERSION << 6) | (count & 0x1f));
        self.u8(pt);
        let words = u16::try_from((len_bytes / 4).saturating_sub(1)).unwrap_or(u16::MAX);
        self.bytes(&words.to_be_bytes());
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn parse_one(packet_type: u8, count: u8, body: &[u8]) -> Result<RtcpPacket<'_>, RtcpError> {
    let truncated = RtcpError::Truncated { packet_type };
    match packet_type {
        PT_SR => {
            let ssrc = Ssrc(be32(body, 0).ok_or(truncated)?);
            let info_bytes = body.get(4..4 + SENDER_INFO_LEN).ok_or(truncated)?;
            let w = |i: usize| be32(info_bytes, i * 4).ok_or(truncated);
            let info = SenderInfo {
                ntp: NtpTime((u64::from(w(0)?) << 32) | u64::from(w(1)?)),
                rtp_ts: RtpTimestamp(w(2)?),
                packet_count: w(3)?,
                octet_count: w(4)?,
            };
            let reports = parse_blocks(body.get(4 + SENDER_INFO_LEN..).unwrap_or(&[]), count)
                .ok_or(truncated)?;
            Ok(RtcpPacket::SenderReport {
                ssrc,
                info,
                reports,
            })
        }
        PT_RR => {
            let ssrc = Ssrc(be32(body, 0).ok_or(truncated)?);
            let reports = parse_blocks(body.get(4..).unwrap_or(&[]), count).ok_or(truncated)?;
            Ok(RtcpPacket::ReceiverReport { ssrc, reports })
        }
        PT_SDES => parse_sdes(body, count)
            .map(RtcpPacket::SourceDescription)
            .ok_or(truncated),
        PT_BYE => {
            let n = usize::from(count) * 4;
            let ids = body.get(..n).ok_or(truncated)?;
            let ssrcs = ids
                .chunks_exact(4)
                .map(|c| Ssrc(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            let reason = match body.get(n..) {
                Some([len, text @ ..]) if *len > 0 => {
                    Some(text.get(..usize::from(*len)).ok_or(truncated)?)
                }
                _ => None,
            };
            Ok(RtcpPacket::Bye { ssrcs, reason })
        }
        _ => Ok(RtcpPacket::Other {
            packet_type,
            count,
            body,
        }),
    }
}

fn parse_blocks(b: &[u8], count: u8) -> Option<Vec<ReportBlock>> {
    let bytes = b.get(..usize::from(count) * REPORT_BLOCK_LEN)?;
    bytes
        .chunks_exact(REPORT_BLOCK_LEN)
        .map(|c| {
            let lost_word = be32(c, 4)?;
            Some(ReportBlock {
                ssrc: Ssrc(be32(c, 0)?),
                fraction_lost: (lost_word >> 24) as u8,
                // Sign-extend the 24-bit field.
                cumulative_lost: ((lost_word << 8) as i32) >> 8,
                ext_highest_seq: be32(c, 8)?,
                jitter: be32(c, 12)?,
                lsr: be32(c, 16)?,
                dlsr: be32(c, 20)?,
            })
        })
        .collect()
}

fn parse_sdes(mut b: &[u8], count: u8) -> Option<Vec<SdesChunk<'_>>> {
    let mut chunks = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let ssrc = Ssrc(be32(b, 0)?);
        let mut pos = 4;
        let mut cname = None;
        loop {
            let item = *b.get(pos)?;
            if item == 0 {
                // End of items: skip to the next 32-bit boundary (RFC 3550 §6.5).
                pos = (pos + 1).div_ceil(4) * 4;
                break;
            }
            let len = usize::from(*b.get(pos + 1)?);
            let text = b.get(pos + 2..pos + 2 + len)?;
            if item == SDES_CNAME {
                cname = Some(text);
            }
            pos += 2 + len;
        }
        chunks.push(SdesChunk { ssrc, cname });
        b = b.get(pos..).unwrap_or(&[]);
    }
    Some(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_from_unix_and_middle() {
        let t = NtpTime::from_unix(Duration::from_millis(1500));
        assert_eq!(t.0 >> 32, NTP_UNIX_OFFSET_SECS + 1);
        assert_eq!(t.0 as u32, 1 << 31);
        assert_eq!(t.middle32() & 0xffff, 0x8000);
    }

    #[test]
    fn rtt_example_from_rfc() {
        // RFC 3550 §6.4.1 figure: A = 0xb710:8000 (46864.500 s), LSR = 0xb705:2000
        // (46853.125 s), DLSR = 0x0005:4000 (5.250 s) -> RTT 6.125 s.
        let arrival = NtpTime(0xb710_8000 << 16);
        let block = ReportBlock {
            ssrc: Ssrc(1),
            fraction_lost: 0,
            cumulative_lost: 0,
            ext_highest_seq: 0,
            jitter: 0,
            lsr: 0xb705_2000,
            dlsr: 0x0005_4000,
        };
        assert_eq!(
            round_trip_time(arrival, &block),
            Some(Duration::from_millis(6125))
        );
        let no_sr = ReportBlock { lsr: 0, ..block };
        assert_eq!(round_trip_time(arrival, &no_sr), None);
        let negative = ReportBlock {
            dlsr: 0x0010_0000,
            ..block
        };
        assert_eq!(round_trip_time(arrival, &negative), None);
    }

    #[test]
    fn is_rtcp_demux() {
        assert!(is_rtcp(&[0x80, 200]));
        assert!(!is_rtcp(&[0x80, 0]));
        assert!(!is_rtcp(&[0x80]));
    }
}
