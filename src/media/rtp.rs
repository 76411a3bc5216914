//! RTP packets (RFC 3550 §5.1) and the receive-side per-stream state (RFC 3550 appendix A).
//!
//! * [`RtpPacket::parse`] turns a datagram into a borrowed view (no copy, no allocation) or a
//!   typed [`RtpError`]; it never panics, whatever the bytes.
//! * [`RtpHeader::write`] / [`RtpHeader::write_packet`] serialise into a caller-provided
//!   buffer, so a sender can encode the payload in place right after the header.
//! * [`RtpReceiver`] is the sans-IO receive state of one call leg: payload-type filtering,
//!   SSRC tracking with probation on a change of source, extended sequence numbers
//!   (appendix A.1), duplicate and reorder detection, interarrival jitter (A.8), cumulative and
//!   fractional loss (A.3), and a counter for every reason a packet is dropped.
//!
//! The header is hand-written rather than taken from the `rtp` crate (webrtc-rs): its
//! `Header`/`Packet` unmarshal into owned values (`Vec` of CSRCs and extensions, `Bytes`
//! payload copied out of a `&[u8]`), which does not fit the zero-copy, caller-buffer design;
//! the fixed header is 12 bytes and simple to get right.

use std::time::{Duration, Instant};

use crate::media::rtcp::{NtpTime, ReportBlock};
use crate::sdp::PayloadType;

/// The only RTP version (RFC 3550 §5.1, field V).
pub const RTP_VERSION: u8 = 2;

/// Length of the fixed RTP header in bytes (RFC 3550 §5.1).
pub const RTP_HEADER_LEN: usize = 12;

/// Length of one CSRC entry in bytes (RFC 3550 §5.1).
pub const CSRC_LEN: usize = 4;

/// Length of the header-extension preamble (profile + length) in bytes (RFC 3550 §5.3.1).
pub const EXTENSION_HEADER_LEN: usize = 4;

/// Sequence numbers a source must send in order before it is accepted (RFC 3550 A.1
/// `MIN_SEQUENTIAL`).
pub const MIN_SEQUENTIAL: u16 = 2;

/// Largest forward sequence jump still taken as loss rather than a restart (RFC 3550 A.1
/// `MAX_DROPOUT`).
pub const MAX_DROPOUT: u16 = 3000;

/// Largest backward sequence step still taken as reordering (RFC 3550 A.1 `MAX_MISORDER`).
pub const MAX_MISORDER: u16 = 100;

/// A change of relative transit time (arrival minus timestamp) beyond which an audio packet
/// of the current source is implausible: its timestamp does not belong to the stream's
/// timeline. RFC 3550 A.1 confirms a sequence-number jump by a second packet in sequence;
/// voxline treats a timestamp jump the same way, so that one stray packet with the stream's
/// SSRC (garbage, a replay) touches neither the jitter nor the loss figures nor the jitter
/// buffer, while a sender that really restarted its timestamps is followed from its second
/// packet.
pub const MAX_TRANSIT_JUMP: Duration = Duration::from_secs(3);

/// Number of sequence numbers (RFC 3550 A.1 `RTP_SEQ_MOD`).
pub const RTP_SEQ_MOD: u32 = 1 << 16;

/// A synchronisation source identifier (RFC 3550 §5.1, field SSRC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ssrc(pub(crate) u32);

impl Ssrc {
    /// Wraps a raw value.
    pub const fn new(v: u32) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<u32> for Ssrc {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

/// An RTP sequence number: 16 bits that wrap (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeqNo(pub(crate) u16);

impl SeqNo {
    /// Wraps a raw value.
    pub const fn new(v: u16) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl From<u16> for SeqNo {
    fn from(v: u16) -> Self {
        Self(v)
    }
}

impl SeqNo {
    /// The next sequence number, wrapping after 65535.
    pub const fn next(self) -> Self {
        Self(self.0.wrapping_add(1))
    }

    /// Signed distance `self - earlier` modulo 2^16, in -32768..=32767.
    pub const fn delta(self, earlier: SeqNo) -> i16 {
        self.0.wrapping_sub(earlier.0) as i16
    }
}

/// An RTP timestamp in units of the payload's clock rate: 32 bits that wrap (RFC 3550 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RtpTimestamp(pub(crate) u32);

impl RtpTimestamp {
    /// Wraps a raw value.
    pub const fn new(v: u32) -> Self {
        Self(v)
    }

    /// The raw value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl From<u32> for RtpTimestamp {
    fn from(v: u32) -> Self {
        Self(v)
    }
}

impl RtpTimestamp {
    /// This timestamp advanced by `ticks`, wrapping.
    pub const fn add(self, ticks: u32) -> Self {
        Self(self.0.wrapping_add(ticks))
    }

    /// Signed distance `self - earlier` modulo 2^32.
    pub const fn delta(self, earlier: RtpTimestamp) -> i32 {
        self.0.wrapping_sub(earlier.0) as i32
    }
}

/// Why bytes are not a valid RTP packet, or do not fit the buffer they are written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpError {
    /// Fewer bytes than the 12-byte fixed header.
    #[error("RTP packet too short: {len} bytes, the fixed header needs {RTP_HEADER_LEN}")]
    TooShort {
        /// Length received.
        len: usize,
    },
    /// The version field is not 2.
    #[error("RTP version {0}, expected {RTP_VERSION}")]
    BadVersion(u8),
    /// The CSRC list runs past the end of the packet.
    #[error("RTP CSRC count {count} does not fit a {len}-byte packet")]
    CsrcTruncated {
        /// The CC field.
        count: u8,
        /// Length received.
        len: usize,
    },
    /// The header extension runs past the end of the packet.
    #[error("RTP header extension does not fit a {len}-byte packet")]
    ExtensionTruncated {
        /// Length received.
        len: usize,
    },
    /// The padding count is zero or larger than the payload (RFC 3550 §5.1, field P).
    #[error("RTP padding of {padding} bytes is invalid with {available} bytes after the header")]
    BadPadding {
        /// The last byte of the packet.
        padding: u8,
        /// Bytes between the end of the header and the end of the packet.
        available: usize,
    },
    /// The output buffer is too small.
    #[error("buffer of {available} bytes is too small, {needed} needed")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// A header extension (RFC 3550 §5.3.1): the profile-defined 16 bits and the raw data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpExtension<'a> {
    /// The "defined by profile" field (e.g. 0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    /// The extension data (a multiple of 4 bytes).
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing the datagram it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The marker bit (for audio: first packet of a talkspurt, RFC 3551 §4.1).
    pub marker: bool,
    /// The payload type.
    pub payload_type: PayloadType,
    /// The sequence number.
    pub seq: SeqNo,
    /// The media timestamp.
    pub timestamp: RtpTimestamp,
    /// The synchronisation source.
    pub ssrc: Ssrc,
    /// The header extension, if the X bit is set.
    pub extension: Option<RtpExtension<'a>>,
    /// The payload, without header, extension or padding.
    pub payload: &'a [u8],
    csrc: &'a [u8],
}

impl<'a> RtpPacket<'a> {
    /// Parses `buf` as an RTP packet (RFC 3550 §5.1): checks the version, skips the CSRC list
    /// and header extension, and strips padding. Never panics.
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        let len = buf.len();
        let Some((fixed, rest)) = buf.split_first_chunk::<RTP_HEADER_LEN>() else {
            return Err(RtpError::TooShort { len });
        };
        let version = fixed[0] >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = fixed[0] & 0x20 != 0;
        let has_extension = fixed[0] & 0x10 != 0;
        let csrc_count = fixed[0] & 0x0f;
        let marker = fixed[1] & 0x80 != 0;
        let pt = fixed[1] & 0x7f;
        let Some(payload_type) = PayloadType::new(pt) else {
            // invariant: a 7-bit value is always a valid payload type; kept as an error
            // rather than a panic.
            return Err(RtpError::BadVersion(version));
        };
        let seq = SeqNo(u16::from_be_bytes([fixed[2], fixed[3]]));
        let timestamp = RtpTimestamp(u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]));
        let ssrc = Ssrc(u32::from_be_bytes([
            fixed[8], fixed[9], fixed[10], fixed[11],
        ]));

        let csrc_len = usize::from(csrc_count) * CSRC_LEN;
        let Some((csrc, mut rest)) = rest.split_at_checked(csrc_len) else {
            return Err(RtpError::CsrcTruncated {
                count: csrc_count,
                len,
            });
        };

        let mut extension = None;
        if has_extension {
            let Some((ext_hdr, after)) = rest.split_first_chunk::<EXTENSION_HEADER_LEN>() else {
                return Err(RtpError::ExtensionTruncated { len });
            };
            let profile = u16::from_be_bytes([ext_hdr[0], ext_hdr[1]]);
            let words = usize::from(u16::from_be_bytes([ext_hdr[2], ext_hdr[3]]));
            let Some((data, after)) = after.split_at_checked(words * 4) else {
                return Err(RtpError::ExtensionTruncated { len });
            };
            extension = Some(RtpExtension { profile, data });
            rest = after;
        }

        let payload = if has_padding {
            let available = rest.len();
            let padding = rest.last().copied().unwrap_or(0);
            if padding == 0 || usize::from(padding) > available {
                return Err(RtpError::BadPadding { padding, available });
            }
            rest.get(..available - usize::from(padding))
                .ok_or(RtpError::BadPadding { padding, available })?
        } else {
            rest
        };

        Ok(Self {
            marker,
            payload_type,
            seq,
            timestamp,
            ssrc,
            extension,
            payload,
            csrc,
        })
    }

    /// The contributing sources (CSRC list), in order.
    pub fn csrcs(&self) -> impl Iterator<Item = Ssrc> + 'a {
        self.csrc
            .chunks_exact(CSRC_LEN)
            .map(|c| Ssrc(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
    }

    /// The number of CSRCs (the CC field).
    pub fn csrc_count(&self) -> usize {
        self.csrc.len() / CSRC_LEN
    }

    /// The fixed header fields, e.g. to re-send the packet.
    pub fn header(&self) -> RtpHeader {
        RtpHeader {
            marker: self.marker,
            payload_type: self.payload_type,
            seq: self.seq,
            timestamp: self.timestamp,
            ssrc: self.ssrc,
        }
    }
}

/// The fields of an outgoing RTP header: version 2, no padding, no extension, no CSRCs (an
/// endpoint has nothing to mix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    /// The marker bit.
    pub marker: bool,
    /// The payload type.
    pub payload_type: PayloadType,
    /// The sequence number.
    pub seq: SeqNo,
    /// The media timestamp.
    pub timestamp: RtpTimestamp,
    /// Our synchronisation source.
    pub ssrc: Ssrc,
}

impl RtpHeader {
    /// Writes the 12-byte header at the start of `buf` and returns [`RTP_HEADER_LEN`]; the
    /// caller writes the payload after it.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize, RtpError> {
        let available = buf.len();
        let Some(out) = buf.first_chunk_mut::<RTP_HEADER_LEN>() else {
            return Err(RtpError::BufferTooSmall {
                needed: RTP_HEADER_LEN,
                available,
            });
        };
        out[0] = RTP_VERSION << 6;
        out[1] = (u8::from(self.marker) << 7) | self.payload_type.get();
        out[2..4].copy_from_slice(&self.seq.0.to_be_bytes());
        out[4..8].copy_from_slice(&self.timestamp.0.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.0.to_be_bytes());
        Ok(RTP_HEADER_LEN)
    }

    /// Writes the header followed by `payload` into `buf`; returns the packet length.
    pub fn write_packet(&self, payload: &[u8], buf: &mut [u8]) -> Result<usize, RtpError> {
        let needed = RTP_HEADER_LEN + payload.len();
        let available = buf.len();
        let Some(out) = buf.get_mut(..needed) else {
            return Err(RtpError::BufferTooSmall { needed, available });
        };
        self.write(out)?;
        out[RTP_HEADER_LEN..].copy_from_slice(payload);
        Ok(needed)
    }
}

/// What an [`RtpReceiver`] accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpReceiverConfig {
    /// Payload types carrying audio in the stream's clock rate: used for jitter.
    pub audio: Vec<PayloadType>,
    /// Payload types accepted but excluded from the jitter estimate, e.g. telephone-event
    /// (RFC 4733 repeats the event's start timestamp for its whole duration).
    pub events: Vec<PayloadType>,
    /// The RTP clock rate in Hz (telephone-event uses the audio rate, RFC 4733 §2.1).
    pub clock_rate: u32,
    /// In-order packets a new SSRC must send before the receiver switches to it (RFC 3550
    /// A.1 probation; [`MIN_SEQUENTIAL`] by default). The first source of the call is
    /// accepted from its first packet: it was announced by signalling.
    pub ssrc_probation: u16,
}

impl RtpReceiverConfig {
    /// Accepts the `audio` payload types (plus `event` if any) at `clock_rate`, with the
    /// default probation.
    pub fn new(clock_rate: u32, audio: Vec<PayloadType>, event: Option<PayloadType>) -> Self {
        Self {
            audio,
            events: event.into_iter().collect(),
            clock_rate,
            ssrc_probation: MIN_SEQUENTIAL,
        }
    }
}

/// Why [`RtpReceiver::receive`] dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtpDrop {
    /// Not a valid RTP packet.
    #[error("malformed RTP: {0}")]
    Malformed(RtpError),
    /// A payload type that was not negotiated.
    #[error("payload type {0} was not negotiated")]
    UnknownPayloadType(PayloadType),
    /// A sequence number already received.
    #[error("duplicate packet")]
    Duplicate,
    /// A sequence number too far behind the highest one (more than [`MAX_MISORDER`]).
    #[error("packet too old")]
    Old,
    /// A forward jump of [`MAX_DROPOUT`] or more; the stream restarts if the next packet
    /// follows it (RFC 3550 A.1).
    #[error("sequence number jump")]
    Jump,
    /// A packet from a new SSRC still on probation.
    #[error("new SSRC on probation")]
    Probation,
    /// An audio packet whose timestamp is more than [`MAX_TRANSIT_JUMP`] off the stream's
    /// timeline, not (yet) confirmed by the next packet in sequence.
    #[error("timestamp off the stream's timeline")]
    Implausible,
}

/// A packet [`RtpReceiver::receive`] accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// The packet.
    pub packet: RtpPacket<'a>,
    /// The extended sequence number: cycles × 2^16 + seq (RFC 3550 A.1).
    pub ext_seq: u32,
    /// Whether this packet starts a new stream (first packet, a new SSRC after probation, or a
    /// sequence restart): the caller resets its jitter buffer and decoder.
    pub new_stream: bool,
}

/// Counters of an [`RtpReceiver`]; one per drop reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtpReceiverStats {
    /// Datagrams given to [`RtpReceiver::receive`].
    pub datagrams: u64,
    /// Packets accepted.
    pub accepted: u64,
    /// Shorter than the fixed header.
    pub too_short: u64,
    /// Version not 2.
    pub bad_version: u64,
    /// Other malformations (CSRC, extension or padding overruns).
    pub malformed: u64,
    /// Payload type not negotiated.
    pub unknown_pt: u64,
    /// Duplicates.
    pub duplicate: u64,
    /// More than [`MAX_MISORDER`] behind.
    pub old: u64,
    /// Forward jumps of [`MAX_DROPOUT`] or more.
    pub jump: u64,
    /// Packets of a new SSRC during probation.
    pub probation: u64,
    /// Audio packets whose timestamp was off the stream's timeline ([`MAX_TRANSIT_JUMP`]).
    pub implausible: u64,
    /// Timeline restarts of the same SSRC: a timestamp jump confirmed by the next packet.
    pub timeline_restarts: u64,
    /// Accepted packets that arrived out of order (behind the highest sequence number).
    pub reordered: u64,
    /// Accepted packets with the marker bit.
    pub markers: u64,
    /// Switches to a new SSRC.
    pub ssrc_changes: u64,
    /// Sequence restarts of the same SSRC (two in-order packets after a jump, RFC 3550 A.1).
    pub restarts: u64,
}

/// Packets expected and lost over every source and sequence restart of a stream: the
/// figures of [`LossStats`] (which restart with each source, as RFC 3550 reports require)
/// summed over the stream's life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossTotals {
    /// Packets expected.
    pub expected: u64,
    /// Distinct packets received.
    pub received: u64,
    /// Packets lost (expected - received, at least 0 per source).
    pub lost: u64,
}

impl LossTotals {
    /// The sum of two totals.
    pub fn plus(self, other: LossTotals) -> LossTotals {
        LossTotals {
            expected: self.expected + other.expected,
            received: self.received + other.received,
            lost: self.lost + other.lost,
        }
    }

    fn of(l: &LossStats) -> LossTotals {
        LossTotals {
            expected: l.expected,
            received: l.received,
            lost: l.cumulative_lost,
        }
    }
}

/// Loss figures for the current source (RFC 3550 A.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossStats {
    /// Packets expected: highest extended sequence number - base + 1.
    pub expected: u64,
    /// Distinct packets received.
    pub received: u64,
    /// Cumulative number lost (expected - received; negative with duplicates it cannot
    /// detect, here clamped at 0).
    pub cumulative_lost: u64,
    /// Highest extended sequence number.
    pub ext_highest_seq: u32,
}

/// Receive-side state of one RTP stream (one call leg), sans-IO.
#[derive(Debug, Clone)]
pub struct RtpReceiver {
    config: RtpReceiverConfig,
    source: Option<Source>,
    candidate: Option<Candidate>,
    stats: RtpReceiverStats,
    /// Loss figures of the sources and sequence runs before the current one.
    finished: LossTotals,
}

impl RtpReceiver {
    /// A receiver accepting what `config` says.
    pub fn new(config: RtpReceiverConfig) -> Self {
        Self {
            config,
            source: None,
            candidate: None,
            stats: RtpReceiverStats::default(),
            finished: LossTotals::default(),
        }
    }

    /// Parses and validates one datagram that arrived at `now`; returns the packet, or why it
    /// was dropped (each reason is also counted in [`RtpReceiver::stats`]).
    pub fn receive<'a>(&mut self, now: Instant, buf: &'a [u8]) -> Result<Received<'a>, RtpDrop> {
        self.stats.datagrams += 1;
        let packet = match RtpPacket::parse(buf) {
            Ok(p) => p,
            Err(e) => {
                match e {
                    RtpError::TooShort { .. } => self.stats.too_short += 1,
                    RtpError::BadVersion(_) => self.stats.bad_version += 1,
                    _ => self.stats.malformed += 1,
                }
                return Err(RtpDrop::Malformed(e));
            }
        };
        let pt = packet.payload_type;
        let is_audio = self.config.audio.contains(&pt);
        if !is_audio && !self.config.events.contains(&pt) {
            self.stats.unknown_pt += 1;
            return Err(RtpDrop::UnknownPayloadType(pt));
        }

        let mut new_stream = false;
        let current = self.source.as_ref().map(|s| s.ssrc);
        if current != Some(packet.ssrc) {
            if current.is_none() {
                self.source = Some(Source::new(packet.ssrc, packet.seq));
            } else if self.probation_passed(packet.ssrc, packet.seq) {
                if let Some(old) = &self.source {
                    self.finished = self.finished.plus(old.totals());
                }
                self.source = Some(Source::new(packet.ssrc, packet.seq));
                self.stats.ssrc_changes += 1;
                self.candidate = None;
            } else {
                self.stats.probation += 1;
                return Err(RtpDrop::Probation);
            }
            new_stream = true;
        }
        let Some(source) = self.source.as_mut() else {
            // invariant: set just above when absent.
            return Err(RtpDrop::Probation);
        };

        // The timestamp must fit the stream's timeline before anything is counted. Packets
        // the sequence check drops anyway (duplicates, old ones, jumps) keep their A.1 label.
        let transit =
            is_audio.then(|| source.transit(now, packet.timestamp, self.config.clock_rate));
        let max = source.ext_max as u16;
        let (ahead, behind) = (
            packet.seq.0.wrapping_sub(max),
            max.wrapping_sub(packet.seq.0),
        );
        let counted = ahead != 0 && (ahead < MAX_DROPOUT || behind <= MAX_MISORDER);
        if let (Some(transit), Some(last), false, true) =
            (transit, source.last_transit, new_stream, counted)
        {
            let max_jump = ticks(MAX_TRANSIT_JUMP, self.config.clock_rate).saturating_mul(SUBTICKS);
            if transit.wrapping_sub(last).unsigned_abs() > max_jump {
                let confirmed = source.suspect.is_some_and(|(seq, t)| {
                    packet.seq == seq.next() && transit.wrapping_sub(t).unsigned_abs() <= max_jump
                });
                if !confirmed {
                    source.suspect = Some((packet.seq, transit));
                    self.stats.implausible += 1;
                    return Err(RtpDrop::Implausible);
                }
                // Two packets in sequence on a new timeline: the sender restarted it.
                source.suspect = None;
                source.last_transit = None;
                self.stats.timeline_restarts += 1;
                new_stream = true;
            }
        }

        let ext_seq = if new_stream && source.received == 0 {
            source.ext_max
        } else {
            match source.update_seq(packet.seq) {
                SeqUpdate::InOrder(ext) => ext,
                SeqUpdate::Reordered(ext) => {
                    self.stats.reordered += 1;
                    ext
                }
                SeqUpdate::Restart(ext) => {
                    self.stats.restarts += 1;
                    new_stream = true;
                    ext
                }
                SeqUpdate::Duplicate => {
                    self.stats.duplicate += 1;
                    return Err(RtpDrop::Duplicate);
                }
                SeqUpdate::Old => {
                    self.stats.old += 1;
                    return Err(RtpDrop::Old);
                }
                SeqUpdate::Jump => {
                    self.stats.jump += 1;
                    return Err(RtpDrop::Jump);
                }
            }
        };
        source.received += 1;
        if let Some(transit) = transit {
            source.update_jitter(transit);
        }
        self.stats.accepted += 1;
        if packet.marker {
            self.stats.markers += 1;
        }
        Ok(Received {
            packet,
            ext_seq,
            new_stream,
        })
    }

    /// The counters.
    pub fn stats(&self) -> RtpReceiverStats {
        self.stats
    }

    /// The SSRC currently received, if any.
    pub fn ssrc(&self) -> Option<Ssrc> {
        self.source.as_ref().map(|s| s.ssrc)
    }

    /// Interarrival jitter of the current source in timestamp units (RFC 3550 A.8).
    pub fn jitter(&self) -> u32 {
        self.source.as_ref().map_or(0, |s| s.jitter_q8 >> 8)
    }

    /// Interarrival jitter of the current source as a duration, with the fraction of a
    /// timestamp unit the estimate holds: a 0.05 ms jitter on an 8 kHz stream is not
    /// rounded to 0.
    pub fn jitter_duration(&self) -> Duration {
        let q8 = self.source.as_ref().map_or(0, |s| s.jitter_q8);
        ticks_to_duration(u64::from(q8), self.config.clock_rate.saturating_mul(256))
    }

    /// Loss figures of the current source (RFC 3550 A.3), if any packet was accepted.
    pub fn loss(&self) -> Option<LossStats> {
        self.source.as_ref().map(Source::loss)
    }

    /// Loss figures over every source and sequence restart so far.
    pub fn loss_totals(&self) -> LossTotals {
        self.source
            .as_ref()
            .map_or(self.finished, |s| self.finished.plus(s.totals()))
    }

    /// Records a sender report from `ssrc` that arrived at `now` carrying NTP time `ntp`, for
    /// the LSR/DLSR fields of our next report block (RFC 3550 §6.4.1).
    pub fn note_sender_report(&mut self, now: Instant, ssrc: Ssrc, ntp: NtpTime) {
        if let Some(s) = self.source.as_mut()
            && s.ssrc == ssrc
        {
            s.last_sr = Some((ntp.middle32(), now));
        }
    }

    /// The reception report block for the current source at `now` (RFC 3550 §6.4.1 with the
    /// A.3 interval arithmetic); starts a new interval for the fraction lost.
    pub fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let s = self.source.as_mut()?;
        let loss = s.loss();
        let expected = loss.expected;
        let expected_interval = expected.saturating_sub(s.expected_prior);
        let received_interval = s.received.saturating_sub(s.received_prior);
        s.expected_prior = expected;
        s.received_prior = s.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval == 0 {
            0
        } else {
            u8::try_from((lost_interval << 8) / expected_interval).unwrap_or(u8::MAX)
        };
        let (lsr, dlsr) = match s.last_sr {
            Some((lsr, at)) => {
                let d = now.saturating_duration_since(at);
                let units =
                    d.as_secs() * 65536 + u64::from(d.subsec_nanos()) * 65536 / 1_000_000_000;
                (lsr, u32::try_from(units).unwrap_or(u32::MAX))
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc: s.ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(loss.cumulative_lost)
                .unwrap_or(i32::MAX)
                .min(ReportBlock::MAX_CUMULATIVE_LOST),
            ext_highest_seq: loss.ext_highest_seq,
            jitter: s.jitter_q8 >> 8,
            lsr,
            dlsr,
        })
    }

    fn probation_passed(&mut self, ssrc: Ssrc, seq: SeqNo) -> bool {
        match self.candidate.as_mut() {
            Some(c) if c.ssrc == ssrc && seq == c.last.next() => {
                c.last = seq;
                c.count += 1;
            }
            _ => {
                self.candidate = Some(Candidate {
                    ssrc,
                    last: seq,
                    count: 1,
                })
            }
        }
        self.candidate
            .as_ref()
            .is_some_and(|c| c.count >= self.config.ssrc_probation.max(1))
    }
}

/// Transit times are measured in this many parts of a timestamp unit.
const SUBTICKS: u32 = 16;

/// `d` in ticks at `clock_rate`.
fn ticks(d: Duration, clock_rate: u32) -> u32 {
    u32::try_from(crate::media::ticks_in(d, u64::from(clock_rate))).unwrap_or(u32::MAX)
}

/// Converts RTP ticks at `clock_rate` into a duration (zero for a zero rate).
pub fn ticks_to_duration(ticks: u64, clock_rate: u32) -> Duration {
    if clock_rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(
        u64::try_from(u128::from(ticks) * 1_000_000_000 / u128::from(clock_rate))
            .unwrap_or(u64::MAX),
    )
}

/// Size of the duplicate-detection window behind the highest sequence number.
const DUP_WINDOW: u32 = 128;

#[derive(Debug, Clone, Copy)]
struct Candidate {
    ssrc: Ssrc,
    last: SeqNo,
    count: u16,
}

#[derive(Debug, Clone)]
struct Source {
    ssrc: Ssrc,
    /// Extended highest sequence number (cycles in the high 16 bits).
    ext_max: u32,
    base_ext: u32,
    /// Sequence number after a jump: if it comes next, the source restarted (A.1 `bad_seq`).
    bad_seq: Option<u16>,
    /// Bit i set: ext_max - i was received.
    seen: u128,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    /// Jitter × 16 (A.8 fixed point).
    /// The jitter in timestamp units × 256: A.8's estimate × 16 in fixed point, over transit
    /// times measured in sixteenths of a unit.
    jitter_q8: u32,
    /// Arrival-time origin for the jitter computation.
    epoch: Option<Instant>,
    /// Previous relative transit time in ticks (A.8).
    last_transit: Option<i32>,
    /// The last packet off the timeline (sequence number, transit), waiting to be confirmed
    /// by the next one in sequence.
    suspect: Option<(SeqNo, i32)>,
    /// Loss figures of the sequence runs before a restart.
    prior: LossTotals,
    last_sr: Option<(u32, Instant)>,
}

enum SeqUpdate {
    InOrder(u32),
    Reordered(u32),
    Restart(u32),
    Duplicate,
    Old,
    Jump,
}

impl Source {
    fn new(ssrc: Ssrc, seq: SeqNo) -> Self {
        let ext = u32::from(seq.0);
        Self {
            ssrc,
            ext_max: ext,
            base_ext: ext,
            bad_seq: None,
            seen: 1,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            jitter_q8: 0,
            epoch: None,
            last_transit: None,
            suspect: None,
            prior: LossTotals::default(),
            last_sr: None,
        }
    }

    /// RFC 3550 A.1 `init_seq` after a restart: cycles start again at 0.
    fn restart(&mut self, seq: SeqNo) {
        self.prior = self.prior.plus(LossTotals::of(&self.loss()));
        let ext = u32::from(seq.0);
        self.ext_max = ext;
        self.base_ext = ext;
        self.bad_seq = None;
        self.seen = 1;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
        self.last_transit = None;
    }

    /// RFC 3550 A.1 `update_seq`, plus duplicate detection over [`DUP_WINDOW`].
    fn update_seq(&mut self, seq: SeqNo) -> SeqUpdate {
        let max = self.ext_max as u16;
        let udelta = seq.0.wrapping_sub(max);
        if udelta == 0 {
            return SeqUpdate::Duplicate;
        }
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            let ext = self.ext_max.wrapping_add(u32::from(udelta));
            self.seen = if u32::from(udelta) >= DUP_WINDOW {
                1
            } else {
                (self.seen << udelta) | 1
            };
            self.ext_max = ext;
            self.bad_seq = None;
            return SeqUpdate::InOrder(ext);
        }
        let behind = max.wrapping_sub(seq.0);
        if behind <= MAX_MISORDER {
            let Some(ext) = self
                .ext_max
                .checked_sub(u32::from(behind))
                .filter(|e| *e >= self.base_ext)
            else {
                // Before the first packet of this stream: count it as old.
                return SeqUpdate::Old;
            };
            let bit = 1u128 << behind;
            if self.seen & bit != 0 {
                return SeqUpdate::Duplicate;
            }
            self.seen |= bit;
            return SeqUpdate::Reordered(ext);
        }
        // A large jump, forwards or backwards.
        if self.bad_seq == Some(seq.0) {
            // Two sequential packets: the other side restarted without telling us.
            self.restart(seq);
            return SeqUpdate::Restart(self.ext_max);
        }
        self.bad_seq = Some(seq.0.wrapping_add(1));
        if udelta < 0x8000 {
            SeqUpdate::Jump
        } else {
            SeqUpdate::Old
        }
    }

    /// The relative transit time of a packet with timestamp `ts` arriving at `now`
    /// (RFC 3550 A.8), in [`SUBTICKS`]ths of a timestamp unit so that arrival times finer
    /// than a unit count; only differences matter, so wrapping is fine.
    fn transit(&mut self, now: Instant, ts: RtpTimestamp, clock_rate: u32) -> i32 {
        let epoch = *self.epoch.get_or_insert(now);
        let since = now.saturating_duration_since(epoch);
        let scale = u64::from(clock_rate) * u64::from(SUBTICKS);
        let arrival = crate::media::ticks_in(since, scale) as u32;
        arrival.wrapping_sub(ts.0.wrapping_mul(SUBTICKS)) as i32
    }

    /// The loss figures of this source over all its sequence runs.
    fn totals(&self) -> LossTotals {
        self.prior.plus(LossTotals::of(&self.loss()))
    }

    /// RFC 3550 A.8: J += (|D| - J) / 16, in timestamp units, for a packet of relative
    /// transit `transit`.
    fn update_jitter(&mut self, transit: i32) {
        if let Some(last) = self.last_transit {
            let d = transit.wrapping_sub(last).unsigned_abs();
            // J += (|D| - J) / 16 with J × 256 kept and D in sixteenths: the fixed-point
            // form of A.8 one fraction finer.
            self.jitter_q8 = self
                .jitter_q8
                .saturating_add(d)
                .saturating_sub((self.jitter_q8 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    fn loss(&self) -> LossStats {
        let expected = u64::from(self.ext_max.wrapping_sub(self.base_ext)) + 1;
        LossStats {
            expected,
            received: self.received,
            cumulative_lost: expected.saturating_sub(self.received),
            ext_highest_seq: self.ext_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(n: u8) -> PayloadType {
        PayloadType::new(n).unwrap()
    }

    #[test]
    fn parse_minimal_header() {
        let buf = [
            0x80, 0x80, 0x12, 0x34, 0, 0, 0x01, 0x00, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3,
        ];
        let p = RtpPacket::parse(&buf).unwrap();
        assert!(p.marker);
        assert_eq!(p.payload_type, pt(0));
        assert_eq!(p.seq, SeqNo(0x1234));
        assert_eq!(p.timestamp, RtpTimestamp(256));
        assert_eq!(p.ssrc, Ssrc(0xdead_beef));
        assert_eq!(p.payload, &[1, 2, 3]);
        assert_eq!(p.csrc_count(), 0);
        assert!(p.extension.is_none());
    }

    #[test]
    fn parse_csrc_extension_padding() {
        let mut buf = vec![0xb2, 8, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        buf.extend_from_slice(&[0, 0, 0, 7, 0, 0, 0, 9]); // 2 CSRCs
        buf.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]); // 1-word extension
        buf.extend_from_slice(&[5, 6]); // payload
        buf.extend_from_slice(&[0, 0, 3]); // 3 bytes padding
        let p = RtpPacket::parse(&buf).unwrap();
        assert_eq!(p.csrcs().collect::<Vec<_>>(), vec![Ssrc(7), Ssrc(9)]);
        let ext = p.extension.unwrap();
        assert_eq!(ext.profile, 0xbede);
        assert_eq!(ext.data, &[0x10, 0xaa, 0, 0]);
        assert_eq!(p.payload, &[5, 6]);
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            RtpPacket::parse(&[0x80; 11]),
            Err(RtpError::TooShort { len: 11 })
        );
        let mut buf = [0u8; 12];
        buf[0] = 0x40;
        assert_eq!(RtpPacket::parse(&buf), Err(RtpError::BadVersion(1)));
        buf[0] = 0x81;
        assert!(matches!(
            RtpPacket::parse(&buf),
            Err(RtpError::CsrcTruncated { count: 1, .. })
        ));
        buf[0] = 0x90;
        assert!(matches!(
            RtpPacket::parse(&buf),
            Err(RtpError::ExtensionTruncated { .. })
        ));
        buf[0] = 0xa0;
        assert!(matches!(
            RtpPacket::parse(&buf),
            Err(RtpError::BadPadding { padding: 0, .. })
        ));
        let mut padded = buf.to_vec();
        padded.push(2);
        assert!(matches!(
            RtpPacket::parse(&padded),
            Err(RtpError::BadPadding { padding: 2, .. })
        ));
        // Extension length pointing past the end.
        let mut ext = vec![0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];
        ext.extend_from_slice(&[0; 8]);
        assert!(matches!(
            RtpPacket::parse(&ext),
            Err(RtpError::ExtensionTruncated { .. })
        ));
    }

    #[test]
    fn parse_never_panics_on_any_short_input() {
        // Every 1- and 2-byte prefix combination over an interesting first byte.
        for first in 0..=255u8 {
            for len in 0..40 {
                let mut buf = vec![0xffu8; len];
                if let Some(b) = buf.first_mut() {
                    *b = first;
                }
                let _ = RtpPacket::parse(&buf);
            }
        }
    }

    #[test]
    fn write_round_trip() {
        let h = RtpHeader {
            marker: true,
            payload_type: pt(111),
            seq: SeqNo(65535),
            timestamp: RtpTimestamp(0xffff_fff0),
            ssrc: Ssrc(42),
        };
        let mut buf = [0u8; 64];
        let n = h.write_packet(&[9, 8, 7], &mut buf).unwrap();
        assert_eq!(n, 15);
        let p = RtpPacket::parse(&buf[..n]).unwrap();
        assert_eq!(p.header(), h);
        assert_eq!(p.payload, &[9, 8, 7]);
        assert_eq!(
            h.write_packet(&[0; 10], &mut [0u8; 21]),
            Err(RtpError::BufferTooSmall {
                needed: 22,
                available: 21
            })
        );
        assert!(h.write(&mut [0u8; 11]).is_err());
    }

    #[test]
    fn seq_and_ts_deltas_wrap() {
        assert_eq!(SeqNo(0).delta(SeqNo(65535)), 1);
        assert_eq!(SeqNo(65535).delta(SeqNo(0)), -1);
        assert_eq!(SeqNo(65535).next(), SeqNo(0));
        assert_eq!(RtpTimestamp(5).delta(RtpTimestamp(u32::MAX - 4)), 10);
        assert_eq!(RtpTimestamp(u32::MAX).add(2), RtpTimestamp(1));
    }

    #[test]
    fn ticks_convert() {
        assert_eq!(ticks_to_duration(160, 8000), Duration::from_millis(20));
        assert_eq!(ticks_to_duration(1, 0), Duration::ZERO);
    }
}
