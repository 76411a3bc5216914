//! One call's media, sans-IO: the object that joins RTP, RTCP, the jitter buffer, the codecs
//! and DTMF.
//!
//! The runtime owns the sockets and the clock and drives a [`MediaStream`] the usual way
//! (see the crate documentation): datagrams go in through [`MediaStream::handle_rtp`] /
//! [`MediaStream::handle_rtcp`], time through [`MediaStream::handle_timeout`], and
//! [`MediaStream::poll_output`] is drained until it returns [`MediaOutput::Timeout`].
//!
//! # Timing
//!
//! Frame ticks run on an absolute schedule: tick `n` is due at `start + n × frame` (the frame
//! is the negotiated ptime; for Opus the largest Opus frame not above it). A late
//! `handle_timeout` processes every missed tick in order, so the number of packets always
//! equals the elapsed time over the frame and nothing drifts. Each tick:
//!
//! 1. pops one frame of the RTP timeline from the jitter buffer, whatever packet sizes the
//!    peer sends, and decodes it, conceals the missing ticks (Opus: from in-band FEC when the
//!    next packet is there) or plays silence: the caller's audio;
//! 2. if we send, sends one frame of queued agent audio (silence when there is none, which
//!    keeps carriers from dropping the call) or the RFC 4733 packets due instead;
//! 3. emits [`MediaEvent::Frame`] with both.
//!
//! Between 1 and 2 the runtime may answer the caller's frame: [`MediaStream::start_tick`]
//! runs step 1 and returns the frame, a local agent or DSP chain queues its reply with
//! [`MediaStream::send_audio`], and [`MediaStream::finish_tick`] runs steps 2 and 3, so the
//! reply leaves in the same tick (an echo comes back after the jitter-buffer delay alone).
//! [`MediaStream::handle_next_tick`] and `handle_timeout` run whole ticks.
//!
//! # G.711 passthrough
//!
//! With PCMU or PCMA the stream also carries the audio as G.711 bytes, untouched, for a
//! backend that speaks G.711 itself (decoding and re-encoding is not byte-exact: μ-law `0x7F`,
//! "negative zero", decodes to 0, which encodes as `0xFF`).
//!
//! * Out: [`MediaStream::send_encoded`] queues bytes in a second queue that is played before
//!   the PCM queue of [`MediaStream::send_audio`]: each tick takes one frame of bytes
//!   (ptime × 8) from it and puts them in the RTP payload as they are (a short tail is padded
//!   with the law's silence code); only when it is empty does the PCM queue play. Both queues
//!   share `outbound_capacity` (one byte counts as one sample), [`MediaStream::flush`] empties
//!   both and [`MediaStream::agent_ms_sent`] counts both. The `sent` PCM of the frame event is
//!   the decoding of the bytes sent.
//! * In: [`MediaEvent::Frame::caller_encoded`] is, for G.711 calls, always one frame of bytes:
//!   the received payload bytes themselves for every span the tick played from a packet (a
//!   30 ms packet gives 20 ms to one frame and 10 ms to the next, a 10 ms packet half a frame;
//!   the caller's bytes go through exactly and in order), and the encoding of the `caller` PCM
//!   for spans concealed or silent (so a consumer gets a continuous 8000 samples/s byte
//!   stream). `None` for G.722 and Opus.
//!
//! RTP timestamps are `ts0 + n × frame` in RTP clock units (for G.722 the clock is 8000 while
//! the PCM is 16000 Hz), so they are continuous across silence and jump by the elapsed time
//! across a hold.
//!
//! # Receiving
//!
//! Datagrams pass the latching filter (symmetric RTP, see below), then the
//! [`RtpReceiver`](crate::media::rtp::RtpReceiver) (version, negotiated payload types, SSRC,
//! sequence; every drop is a counter), then go to the RFC 4733 receiver (telephone-event) or
//! the jitter buffer (audio). In-band DTMF is looked for in the decoded audio only when
//! telephone-event was not negotiated. With rtcp-mux, RTCP on the RTP socket is told apart
//! by RFC 5761 §4.
//!
//! # Symmetric RTP
//!
//! We send to the SDP address until the peer's real source is known: an address is latched
//! after two consecutive valid packets (negotiated payload type) with the same SSRC from it,
//! within `latch_window` of the start or of the last [`MediaStream::update`]. After that,
//! packets from other addresses are dropped and counted. The RTCP address follows: the RTP
//! address with rtcp-mux, else the address RTCP comes from (from the RTP peer's host), else
//! the latched RTP port + 1.
//!
//! # SRTP
//!
//! When the negotiation gave SRTP keys ([`NegotiatedMedia::srtp`]), every RTP and RTCP
//! datagram we send is protected as [`MediaStream::poll_output`] hands it out (with our key),
//! and every datagram received is authenticated and decrypted (with the peer's key) after the
//! anti-hijack address check and before anything else looks at it, latching included: a
//! forged packet can neither latch nor reach the jitter buffer. A packet that fails
//! authentication or is a replay is dropped and counted ([`MediaStats::srtp_auth_failed`],
//! [`MediaStats::srtp_replayed`]). A re-INVITE that changes a key or the suite starts a new
//! context for that direction (rekeying); an unchanged key keeps its context, rollover
//! counters and replay windows.
//!
//! # RTCP
//!
//! An SR (if we sent RTP since the last report) or RR with one report block about the peer,
//! plus SDES CNAME, every 5 s on average (RFC 3550 §6.2, seeded randomisation). Incoming SRs
//! set LSR/DLSR, report blocks about us give the round-trip time and the peer's view of our
//! stream, a BYE gives [`MediaEvent::RemoteBye`].
//!
//! # Not done
//!
//! * Opus decodes at the encoder's rate (the peer's `maxplaybackrate`), so that the caller and
//!   sent audio share one rate; the peer's `sprop-maxcapturerate` is not used.
//! * telephone-event durations use the 8000 Hz clock the SDP layer declares
//!   (`telephone-event/8000`) whatever the audio clock; event timestamps use the audio clock.
//! * Incoming RTP is processed whatever our direction says (a peer that sends while we are
//!   sendonly is still decoded); the call layer decides what to do with the audio.
//! * A codec or ptime change (re-INVITE) starts a new jitter buffer: its statistics (target
//!   delay, concealment ratio) restart; the RTP counters carry over.
//! * Encoded (passthrough) audio is G.711 only; G.722 and Opus payloads are never passed
//!   through (their encoders and decoders keep state across frames).
//! * A very late `handle_timeout` (a stalled runtime) sends all missed packets at once, as
//!   the absolute schedule requires; nothing limits the burst.

mod clock;
mod latch;
mod law;
mod recv;
mod secure;
mod send;

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::media::codec::{CodecError, encoder_for};
use crate::media::dtmf::rfc4733::{DEFAULT_CLOCK_RATE, Rfc4733Error};
use crate::media::dtmf::{Digit, DtmfConfigError, DtmfDigit};
use crate::media::jitter::JitterConfigError;
use crate::media::quality::{self, CodecImpairment, QualityInput};
use crate::media::rtcp::{
    self, CompoundReport, NtpClock, RtcpPacket, RtcpScheduler, SenderInfo, parse_compound,
    write_bye,
};
use crate::media::rtp::{RtpPacket, SeqNo, Ssrc};
use crate::sdp::{Codec, NegotiatedMedia};

use self::clock::{Layout, TickClock};
use self::latch::{Admit, Latch};
use self::recv::Receiver;
use self::secure::Secure;
use self::send::Sender;

pub use self::latch::LATCH_PACKETS;

/// Default [`MediaConfig::jitter_min`].
pub const DEFAULT_JITTER_MIN: Duration = Duration::from_millis(20);

/// Default [`MediaConfig::jitter_max`].
pub const DEFAULT_JITTER_MAX: Duration = Duration::from_millis(200);

/// Default [`MediaConfig::latch_window`].
pub const DEFAULT_LATCH_WINDOW: Duration = Duration::from_secs(5);

/// Default [`MediaConfig::outbound_capacity`].
pub const DEFAULT_OUTBOUND_CAPACITY: Duration = Duration::from_secs(2);

/// Longest CNAME an SDES item carries (RFC 3550 §6.5: 8-bit length).
pub const MAX_CNAME_LEN: usize = 255;

/// Everything a [`MediaStream`] is built from.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The outcome of the offer/answer exchange.
    pub negotiated: NegotiatedMedia,
    /// Our SSRC, chosen (at random) by the caller.
    pub local_ssrc: Ssrc,
    /// Our RTCP CNAME (at most [`MAX_CNAME_LEN`] bytes).
    pub cname: String,
    /// Lowest jitter-buffer target delay.
    pub jitter_min: Duration,
    /// Highest jitter-buffer target delay.
    pub jitter_max: Duration,
    /// No valid RTP for this long while the peer should be sending gives
    /// [`MediaEvent::RtpTimeout`]; `None`: never.
    pub rtp_timeout: Option<Duration>,
    /// How long after the start or an [`MediaStream::update`] latching is allowed.
    pub latch_window: Duration,
    /// Seed of the initial sequence number and timestamp and the RTCP interval jitter.
    pub seed: u64,
    /// The runtime's mapping from `Instant` to NTP time.
    pub ntp: NtpClock,
    /// The most agent audio [`MediaStream::send_audio`] and [`MediaStream::send_encoded`]
    /// queue together.
    pub outbound_capacity: Duration,
}

impl MediaConfig {
    /// A configuration with the defaults: jitter buffer 20-200 ms, no RTP timeout, 5 s
    /// latching window, 2 s of outbound audio.
    pub fn new(
        negotiated: NegotiatedMedia,
        local_ssrc: Ssrc,
        cname: impl Into<String>,
        ntp: NtpClock,
        seed: u64,
    ) -> Self {
        Self {
            negotiated,
            local_ssrc,
            cname: cname.into(),
            jitter_min: DEFAULT_JITTER_MIN,
            jitter_max: DEFAULT_JITTER_MAX,
            rtp_timeout: None,
            latch_window: DEFAULT_LATCH_WINDOW,
            seed,
            ntp,
            outbound_capacity: DEFAULT_OUTBOUND_CAPACITY,
        }
    }
}

/// What the runtime must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOutput {
    /// Send `payload` to `to`: on the RTCP socket if `rtcp` (on the RTP socket with rtcp-mux),
    /// else on the RTP socket.
    Transmit {
        /// Destination.
        to: SocketAddr,
        /// The datagram.
        payload: Vec<u8>,
        /// Whether it is RTCP.
        rtcp: bool,
    },
    /// Something happened.
    Event(MediaEvent),
    /// Nothing more now: call [`MediaStream::handle_timeout`] at this instant.
    Timeout(Instant),
}

/// What a [`MediaStream`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// One per frame tick, aligned: what the caller said (after jitter buffer and
    /// decode/conceal; silence if nothing) and what we sent (agent audio encoded this tick, or
    /// silence). Both at [`MediaStream::sample_rate`], [`MediaStream::frame_samples`] long.
    Frame {
        /// The caller's audio.
        caller: Vec<i16>,
        /// Our audio as it went out: the agent's PCM, or on a PCMU or PCMA call the decoding
        /// of the bytes sent (what the far end hears).
        sent: Vec<i16>,
        /// For PCMU and PCMA calls, the caller's audio as G.711 bytes, one frame
        /// ([`MediaStream::frame_samples`] bytes): the received payload bytes untouched for
        /// the spans this tick played from packets, the encoding of `caller` for spans
        /// concealed or silent. `None` for other codecs, and when turned off by
        /// [`MediaStream::set_caller_encoded`]. See the module documentation.
        caller_encoded: Option<Vec<u8>>,
    },
    /// A key press from the peer (RFC 4733, SIP INFO or in-band), reported once.
    Dtmf(DtmfDigit),
    /// The peer's RTP address was latched (symmetric RTP).
    Latched {
        /// The address RTP now goes to.
        addr: SocketAddr,
    },
    /// The peer's stream switched to a new SSRC.
    SsrcChanged {
        /// The new SSRC.
        ssrc: Ssrc,
    },
    /// No valid RTP for the configured timeout while the peer should be sending.
    RtpTimeout {
        /// Time since the last valid packet (or the start / last update).
        silent_for: Duration,
    },
    /// The peer sent RTCP BYE.
    RemoteBye,
}

/// Why a [`MediaStream`] cannot be built or refuses a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// The codec cannot be built.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The jitter-buffer settings are unusable.
    #[error(transparent)]
    Jitter(#[from] JitterConfigError),
    /// The DTMF receivers cannot be built.
    #[error(transparent)]
    DtmfConfig(#[from] DtmfConfigError),
    /// The RFC 4733 sender refused.
    #[error(transparent)]
    Dtmf(#[from] Rfc4733Error),
    /// An in-band key press could not be queued.
    #[error(transparent)]
    Tone(#[from] crate::media::dtmf::tone::ToneError),
    /// More agent audio than `outbound_capacity`; nothing was queued.
    #[error("outbound audio queue full: {queued:?} queued, capacity {capacity:?}")]
    Backpressure {
        /// Audio queued now.
        queued: Duration,
        /// The capacity.
        capacity: Duration,
    },
    /// telephone-event was not negotiated.
    #[error("telephone-event was not negotiated")]
    DtmfNotNegotiated,
    /// Our direction does not send (hold or inactive).
    #[error("the media direction does not send")]
    NotSending,
    /// The CNAME is longer than [`MAX_CNAME_LEN`].
    #[error("CNAME of {0} bytes is longer than {MAX_CNAME_LEN}")]
    CnameTooLong(usize),
    /// [`MediaStream::send_encoded`] on a call whose codec is not PCMU or PCMA.
    #[error("encoded passthrough needs PCMU or PCMA, the call uses {0:?}")]
    PassthroughUnsupported(Codec),
    /// The codec's frame geometry is unusable.
    #[error("unusable frame layout: {frame_samples} samples at {sample_rate} Hz")]
    Layout {
        /// PCM rate.
        sample_rate: u32,
        /// Samples per frame.
        frame_samples: usize,
    },
    /// The decoder and encoder disagree on the PCM rate.
    #[error("encoder runs at {encoder} Hz but decoder at {decoder} Hz")]
    SampleRateMismatch {
        /// Encoder rate.
        encoder: u32,
        /// Decoder rate.
        decoder: u32,
    },
}

/// A snapshot of one stream's counters and quality figures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct MediaStats {
    /// The codec's encoding name.
    pub codec: &'static str,
    /// PCM rate in Hz.
    pub sample_rate: u32,
    /// Frame duration in milliseconds.
    pub frame_ms: f64,
    /// Our SSRC.
    pub local_ssrc: u32,
    /// The SSRC received, if any.
    pub remote_ssrc: Option<u32>,
    /// Whether our direction sends now.
    pub sending: bool,
    /// Frame ticks processed.
    pub ticks: u64,
    /// Ticks processed a frame or more after they were due (catch-up).
    pub late_ticks: u64,
    /// RTP packets sent (audio and telephone-event).
    pub packets_sent: u64,
    /// RTP payload octets sent.
    pub bytes_sent: u64,
    /// telephone-event packets sent.
    pub dtmf_packets_sent: u64,
    /// Milliseconds of agent audio (not silence) sent.
    pub agent_ms_sent: u64,
    /// Agent audio queued, in milliseconds.
    pub queued_ms: f64,
    /// RTP packets accepted.
    pub packets_received: u64,
    /// RTP payload octets accepted.
    pub bytes_received: u64,
    /// Packets expected over the whole call (RFC 3550 A.3 per source, summed over every SSRC,
    /// sequence restart and re-INVITE).
    pub packets_expected: u64,
    /// Packets lost over the whole call (summed like `packets_expected`).
    pub packets_lost: u64,
    /// Packets expected from the current source (RFC 3550 A.3): what RTCP reports.
    pub source_packets_expected: u64,
    /// Packets lost from the current source (RFC 3550 A.3).
    pub source_packets_lost: u64,
    /// Fraction lost in the last RTCP interval we reported on, 0 to 1.
    pub fraction_lost: f64,
    /// Interarrival jitter in milliseconds (RFC 3550 A.8).
    pub jitter_ms: f64,
    /// Round-trip time from the peer's last report block, if any.
    pub rtt_ms: Option<f64>,
    /// E-model transmission rating R.
    pub r_factor: f64,
    /// MOS-CQE estimate.
    pub mos: f64,
    /// Jitter-buffer target delay in milliseconds.
    pub jitter_buffer_target_ms: f64,
    /// Jitter-buffer delay of the last frame played, in milliseconds.
    pub jitter_buffer_current_ms: f64,
    /// Share of speech frames concealed.
    pub concealment_ratio: f64,
    /// Frames recovered from Opus in-band FEC.
    pub fec_recovered: u64,
    /// The latched RTP address.
    #[schema(value_type = Option<String>)]
    pub latched: Option<SocketAddr>,
    /// Where RTCP goes.
    #[schema(value_type = Option<String>)]
    pub rtcp_peer: Option<SocketAddr>,
    /// SSRC switches of the peer's stream.
    pub ssrc_changes: u64,
    /// RTP datagrams from an address other than the peer's (anti-hijack).
    pub dropped_foreign: u64,
    /// Malformed RTP datagrams (short, wrong version, bad CSRC/extension/padding).
    pub dropped_malformed: u64,
    /// Audio packets of the current SSRC whose timestamp was off the stream's timeline
    /// (garbage or a replay; see [`crate::media::rtp::MAX_TRANSIT_JUMP`]).
    pub dropped_implausible: u64,
    /// RTP packets of a payload type not negotiated.
    pub dropped_unknown_pt: u64,
    /// Duplicate RTP packets.
    pub dropped_duplicate: u64,
    /// Too old, a sequence jump, or a new SSRC on probation.
    pub dropped_sequence: u64,
    /// Packets the jitter buffer dropped as too late to play.
    pub dropped_late: u64,
    /// Packets the jitter buffer dropped as it was full.
    pub dropped_overflow: u64,
    /// Payloads the decoder refused.
    pub decode_errors: u64,
    /// Frames the encoder refused.
    pub encode_errors: u64,
    /// Malformed telephone-event payloads and INFO bodies.
    pub dtmf_errors: u64,
    /// RTCP compound packets sent.
    pub rtcp_sent: u64,
    /// RTCP compound packets accepted.
    pub rtcp_received: u64,
    /// Malformed RTCP packets.
    pub rtcp_malformed: u64,
    /// RTCP packets from an unexpected address.
    pub rtcp_dropped_foreign: u64,
    /// Fraction of our packets the peer reported lost (last report), 0 to 1.
    pub remote_fraction_lost: Option<f64>,
    /// Cumulative packets of ours the peer reported lost.
    pub remote_packets_lost: Option<i64>,
    /// Jitter the peer reported on our stream, in milliseconds.
    pub remote_jitter_ms: Option<f64>,
    /// Whether the media is SRTP.
    pub srtp: bool,
    /// The SRTP suite (`AES_CM_128_HMAC_SHA1_80`, `AES_CM_128_HMAC_SHA1_32`,
    /// `AEAD_AES_128_GCM`), when the media is SRTP.
    pub srtp_suite: Option<&'static str>,
    /// SRTP and SRTCP packets dropped as their authentication tag did not verify (tampered,
    /// another key, or too short to carry a tag).
    pub srtp_auth_failed: u64,
    /// SRTP and SRTCP packets dropped as replays (seen already, or older than the window).
    pub srtp_replayed: u64,
}

/// One call's media, sans-IO (see the module documentation).
pub struct MediaStream {
    negotiated: NegotiatedMedia,
    cname: String,
    jitter_min: Duration,
    jitter_max: Duration,
    rtp_timeout: Option<Duration>,
    latch_window: Duration,
    ntp: NtpClock,
    clock: TickClock,
    send: Sender,
    recv: Receiver,
    latch: Latch,
    rtcp: RtcpScheduler,
    rtcp_stats: RtcpState,
    /// Last valid RTP (or start/update) and whether the timeout event was given since.
    last_rx: Instant,
    timeout_fired: bool,
    out: VecDeque<MediaOutput>,
    ticks: u64,
    late_ticks: u64,
    dropped_foreign: u64,
    last_fraction_lost: u8,
    /// A tick whose packet [`MediaStream::send_ahead`] already sent, with the PCM it carried
    /// (for that tick's frame event).
    ahead: Option<(u64, Vec<i16>)>,
    /// A tick [`MediaStream::start_tick`] began and [`MediaStream::finish_tick`] has not sent.
    pending: Option<PendingTick>,
    /// Whether frame events carry `caller_encoded` (see [`MediaStream::set_caller_encoded`]).
    caller_encoded: bool,
    /// SDES-SRTP: contexts when the media is encrypted, and the drop counters.
    srtp: Secure,
}

/// A frame tick between [`MediaStream::start_tick`] and [`MediaStream::finish_tick`].
#[derive(Debug)]
struct PendingTick {
    at: Instant,
    n: u64,
    caller: Vec<i16>,
    caller_encoded: Option<Vec<u8>>,
}

impl MediaStream {
    /// A stream whose first frame tick is due at `now`.
    pub fn new(cfg: MediaConfig, now: Instant) -> Result<Self, MediaError> {
        if cfg.cname.len() > MAX_CNAME_LEN {
            return Err(MediaError::CnameTooLong(cfg.cname.len()));
        }
        let neg = cfg.negotiated;
        let (encoder, layout) = build_encoder(&neg)?;
        let recv = Receiver::new(
            &neg,
            &layout,
            cfg.jitter_min,
            cfg.jitter_max,
            DEFAULT_CLOCK_RATE,
        )?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let seq0: u16 = rng.r#gen();
        let ts0: u32 = rng.r#gen();
        let rtcp_seed: u64 = rng.r#gen();
        let send = Sender::new(
            encoder,
            neg.codec.codec,
            layout,
            cfg.local_ssrc,
            neg.codec.payload_type,
            neg.telephone_event,
            DEFAULT_CLOCK_RATE,
            SeqNo(seq0),
            cfg.outbound_capacity,
        )?;
        Ok(Self {
            clock: TickClock::new(now, layout, ts0),
            send,
            recv,
            latch: Latch::new(now, cfg.latch_window),
            rtcp: RtcpScheduler::new(now, rtcp_seed),
            rtcp_stats: RtcpState::default(),
            last_rx: now,
            timeout_fired: false,
            out: VecDeque::new(),
            ticks: 0,
            late_ticks: 0,
            dropped_foreign: 0,
            last_fraction_lost: 0,
            ahead: None,
            pending: None,
            caller_encoded: true,
            srtp: Secure::new(neg.srtp.as_ref()),
            negotiated: neg,
            cname: cfg.cname,
            jitter_min: cfg.jitter_min,
            jitter_max: cfg.jitter_max,
            rtp_timeout: cfg.rtp_timeout,
            latch_window: cfg.latch_window,
            ntp: cfg.ntp,
        })
    }

    /// A re-INVITE or UPDATE changed the session: new direction (hold/resume), codec, ptime,
    /// telephone-event or remote address. Re-opens latching (forgetting the latched address
    /// if the SDP address changed) and re-arms the RTP timeout. On a codec or ptime change
    /// the frame schedule continues from the next tick with the new frame; queued agent audio
    /// is dropped if the sample rate changes. On error nothing changes.
    pub fn update(&mut self, now: Instant, negotiated: NegotiatedMedia) -> Result<(), MediaError> {
        // A started tick belongs to the old session: it goes out first.
        self.finish_tick();
        let old = &self.negotiated;
        let codec_changed = old.codec != negotiated.codec || old.ptime_ms != negotiated.ptime_ms;
        let te_changed = old.telephone_event != negotiated.telephone_event;
        let remote_changed =
            old.remote_rtp != negotiated.remote_rtp || old.remote_rtcp != negotiated.remote_rtcp;
        let was_sending = self.sending();

        if codec_changed || te_changed {
            let (encoder, layout) = build_encoder(&negotiated)?;
            let mut recv = Receiver::new(
                &negotiated,
                &layout,
                self.jitter_min,
                self.jitter_max,
                DEFAULT_CLOCK_RATE,
            )?;
            self.send.reconfigure(
                encoder,
                negotiated.codec.codec,
                layout,
                negotiated.codec.payload_type,
                negotiated.telephone_event,
                DEFAULT_CLOCK_RATE,
            )?;
            recv.inherit(&self.recv);
            recv.set_encoded_frames(self.caller_encoded);
            self.recv = recv;
            if layout != *self.clock.layout() {
                self.clock.reanchor(layout);
            }
        }
        self.srtp
            .update(old.srtp.as_ref(), negotiated.srtp.as_ref());
        self.negotiated = negotiated;
        // A packet sent ahead belongs to the old schedule; its tick sends nothing new.
        if codec_changed {
            self.ahead = None;
        }
        if was_sending != self.sending() {
            // Hold drops queued events; on resume the first packet gets the marker bit.
            self.send.pause();
        }
        self.latch.reopen(now, self.latch_window, remote_changed);
        self.last_rx = now;
        self.timeout_fired = false;
        Ok(())
    }

    /// A datagram arrived on the RTP socket from `source`. With rtcp-mux, RTCP is told apart
    /// by RFC 5761 §4 and handled as by [`Self::handle_rtcp`].
    pub fn handle_rtp(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        if self.negotiated.rtcp_mux && rtcp::is_rtcp(datagram) {
            self.rtcp_in(now, source, datagram, true);
            return;
        }
        let admit = self.latch.admit_rtp(now, source, &self.negotiated);
        if admit == Admit::Foreign {
            self.dropped_foreign += 1;
            return;
        }
        if !self.srtp.is_on() {
            self.rtp_in(now, source, datagram, admit);
            return;
        }
        if let Some(plain) = self.srtp.unprotect(datagram, false) {
            self.rtp_in(now, source, &plain, admit);
            self.srtp.put_back(plain);
        }
    }

    /// An admitted RTP datagram, in the clear.
    fn rtp_in(&mut self, now: Instant, source: SocketAddr, datagram: &[u8], admit: Admit) {
        match admit {
            Admit::Pass => {}
            Admit::Foreign => return,
            Admit::Candidate => {
                let valid = RtpPacket::parse(datagram)
                    .ok()
                    .filter(|p| self.recv.accepts(p.payload_type));
                let latched = valid.and_then(|p| self.latch.observe(now, source, p.ssrc));
                match latched {
                    Some(addr) => self.emit(MediaEvent::Latched { addr }),
                    None => {
                        self.dropped_foreign += 1;
                        return;
                    }
                }
            }
        }
        let Ok(rec) = self.recv.validate(now, datagram) else {
            return;
        };
        if let Some(addr) = self.latch.observe(now, source, rec.packet.ssrc) {
            self.emit(MediaEvent::Latched { addr });
        }
        self.last_rx = now;
        self.timeout_fired = false;
        self.recv.accept(now, &rec, &mut self.out);
    }

    /// Once the latching window has closed, the one address RTP (and RTCP over rtcp-mux) is
    /// still accepted from until the next [`Self::update`]: the latched address, else the
    /// SDP's. `None` while the window is open (packets from anywhere may latch) or while that
    /// address is unusable (`0.0.0.0`, port 0). A runtime may connect the RTP socket to it:
    /// the kernel then drops other senders as [`Self::handle_rtp`] would (they are not counted
    /// in `dropped_foreign` then), and sends to the peer without a route lookup per packet.
    pub fn rtp_source(&self, now: Instant) -> Option<SocketAddr> {
        if self.latch.is_open(now) {
            return None;
        }
        let peer = self.latch.rtp_peer(&self.negotiated);
        (!peer.ip().is_unspecified() && peer.port() != 0).then_some(peer)
    }

    /// Hands back the buffers of a [`MediaEvent::Frame`] once used, so the next ticks reuse
    /// them instead of allocating (optional; the hot path of the runtime does it).
    pub fn recycle_frame(&mut self, caller: Vec<i16>, sent: Vec<i16>) {
        self.recv.recycle(caller);
        self.send.recycle_pcm(sent);
    }

    /// Whether [`MediaEvent::Frame::caller_encoded`] is filled in for G.711 calls (the
    /// default) or always `None`: a runtime whose consumer of the frames has no use for the
    /// G.711 bytes (a local agent, the recorder) turns it off and saves a copy or an encoding
    /// per frame. Kept across [`Self::update`].
    pub fn set_caller_encoded(&mut self, on: bool) {
        self.caller_encoded = on;
        self.recv.set_encoded_frames(on);
    }

    /// Hands back the `caller_encoded` buffer of a [`MediaEvent::Frame`] once used, for reuse
    /// (optional, like [`Self::recycle_frame`]).
    pub fn recycle_caller_encoded(&mut self, caller_encoded: Vec<u8>) {
        self.recv.recycle_bytes(caller_encoded);
    }

    /// Hands back a [`MediaOutput::Transmit`] payload once sent, for reuse.
    pub fn recycle_packet(&mut self, payload: Vec<u8>) {
        self.send.recycle_packet(payload);
    }

    /// A datagram arrived on the RTCP socket (no rtcp-mux) from `source`.
    pub fn handle_rtcp(&mut self, now: Instant, source: SocketAddr, datagram: &[u8]) {
        self.rtcp_in(now, source, datagram, false);
    }

    /// A SIP INFO DTMF body (`application/dtmf-relay` or `application/dtmf`) handed down by
    /// the call layer; a malformed one is counted in [`MediaStats::dtmf_errors`].
    pub fn handle_info_dtmf(&mut self, now: Instant, content_type: &str, body: &[u8]) {
        self.recv.info(now, content_type, body, &mut self.out);
    }

    /// Drives time: processes every frame tick due at or before `now` (late calls catch up),
    /// RTCP reports, the RFC 4733 end timeout and the RTP timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.handle_next_tick(now) {}
        self.recv.dtmf_timeout(now, &mut self.out);
        if self.rtcp.poll(now) {
            self.send_report(now, false);
        }
        if let Some(deadline) = self.rtp_timeout_deadline()
            && now >= deadline
        {
            self.timeout_fired = true;
            self.emit(MediaEvent::RtpTimeout {
                silent_for: now.saturating_duration_since(self.last_rx),
            });
        }
    }

    /// Runs the earliest frame tick due at `now`, if any (its packet out, its `Frame` event
    /// up); `false` when no tick is due. A runtime that wakes late calls this until `false`,
    /// draining [`Self::poll_output`] and feeding its local agent after each tick, so that
    /// every tick sends the audio the agent made for it instead of silence; then
    /// [`Self::handle_timeout`] for the rest. The same as [`Self::start_tick`] then
    /// [`Self::finish_tick`] with nothing done in between.
    pub fn handle_next_tick(&mut self, now: Instant) -> bool {
        if self.start_tick(now).is_none() {
            return false;
        }
        self.finish_tick();
        true
    }

    /// The first half of the earliest tick due at `now`: takes the caller's frame for it
    /// from the jitter buffer and decodes it, and returns it (mono PCM at
    /// [`Self::sample_rate`]); `None` when no tick is due. A local agent (or a DSP chain)
    /// answers it with [`Self::send_audio`] before [`Self::finish_tick`] sends the tick's
    /// packet, so the reply leaves in the same tick instead of the next one. A tick started
    /// and not finished is finished first.
    pub fn start_tick(&mut self, now: Instant) -> Option<&[i16]> {
        self.finish_tick();
        let at = self.clock.next_time().filter(|t| *t <= now)?;
        let n = self.clock.next();
        self.clock.advance();
        self.ticks += 1;
        if now.saturating_duration_since(at) >= self.clock.layout().frame() {
            self.late_ticks += 1;
        }
        let (caller, caller_encoded) = self.recv.tick(at, &mut self.out);
        let pending = self.pending.insert(PendingTick {
            at,
            n,
            caller,
            caller_encoded,
        });
        Some(&pending.caller)
    }

    /// The second half of the tick [`Self::start_tick`] began: sends its packet, with the
    /// agent audio queued by then, and emits its `Frame` event. Nothing when no tick is
    /// started.
    pub fn finish_tick(&mut self) {
        let Some(PendingTick {
            at,
            n,
            caller,
            caller_encoded,
        }) = self.pending.take()
        else {
            return;
        };
        let sent = match self.ahead.take() {
            // Sent early by `send_ahead`: nothing more goes out for this tick.
            Some((k, pcm)) if k == n => pcm,
            _ => {
                let to = self
                    .sending()
                    .then(|| self.latch.rtp_peer(&self.negotiated));
                self.send.tick(at, n, &self.clock, to, &mut self.out)
            }
        };
        self.emit(MediaEvent::Frame {
            caller,
            sent,
            caller_encoded,
        });
    }

    /// Appends agent audio (mono, at [`Self::sample_rate`]) to the outbound queue.
    /// `Err(Backpressure)` if that would exceed `outbound_capacity` (shared with
    /// [`Self::send_encoded`]); nothing is queued then.
    pub fn send_audio(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.send.push_audio(pcm)
    }

    /// G.711 passthrough: appends already-encoded agent audio (PCMU or PCMA bytes of the
    /// negotiated law, one byte a sample at 8000 Hz) to the encoded queue, which plays before
    /// the PCM queue; its bytes go into the RTP payloads unchanged (see the module
    /// documentation). `Err(PassthroughUnsupported)` if the codec is not PCMU or PCMA,
    /// `Err(Backpressure)` if the two queues together would exceed `outbound_capacity`;
    /// nothing is queued then.
    pub fn send_encoded(&mut self, payload: &[u8]) -> Result<(), MediaError> {
        self.send.push_encoded(self.negotiated.codec.codec, payload)
    }

    /// Starts a talkspurt now instead of at the next tick: when agent audio is queued, nothing
    /// of the agent's is playing (the last packet was silence), no key press is being sent and
    /// the next tick is still ahead, that tick's packet (its timestamp, the marker bit, the
    /// first frame of the queued audio) is sent at `now`, and the tick itself then sends
    /// nothing. Later ticks go on as scheduled, so only the first packet of the talkspurt is
    /// early (by less than one frame, which the far end's jitter buffer absorbs) and the RTP
    /// timestamps stay on the same clock. Saves a reply waiting for the next tick. Returns
    /// whether a packet was sent.
    pub fn send_ahead(&mut self, now: Instant) -> bool {
        let Some(at) = self.clock.next_time() else {
            return false;
        };
        if at <= now
            || self.ahead.is_some()
            || self.pending.is_some()
            || !self.sending()
            || self.send.talking()
            || self.send.queued().is_zero()
            || self.send.dtmf_busy()
        {
            return false;
        }
        let n = self.clock.next();
        let to = Some(self.latch.rtp_peer(&self.negotiated));
        let pcm = self.send.tick(at, n, &self.clock, to, &mut self.out);
        self.ahead = Some((n, pcm));
        true
    }

    /// Barge-in: drops all queued agent audio, PCM and encoded; the next tick sends silence.
    pub fn flush(&mut self) {
        self.send.flush();
    }

    /// Sends a key press by RFC 4733, starting at the next frame tick (after any key press
    /// still being sent). Audio packets are suppressed while events play.
    /// `Err(DtmfNotNegotiated)` without telephone-event, `Err(NotSending)` on hold.
    pub fn send_dtmf(
        &mut self,
        now: Instant,
        digit: Digit,
        duration: Duration,
    ) -> Result<(), MediaError> {
        if self.negotiated.telephone_event.is_none() {
            return Err(MediaError::DtmfNotNegotiated);
        }
        if !self.sending() {
            return Err(MediaError::NotSending);
        }
        let start = self.next_tick_after(now);
        self.send.send_dtmf(start, digit, duration)
    }

    /// Sends a key press as in-band tones (ITU-T Q.23) in place of the agent's audio, from the
    /// next frame tick (after any key press still being sent); the agent's audio waits.
    /// Works whatever was negotiated. `Err(NotSending)` on hold.
    pub fn send_dtmf_tone(&mut self, digit: Digit, duration: Duration) -> Result<(), MediaError> {
        if !self.sending() {
            return Err(MediaError::NotSending);
        }
        self.send.send_dtmf_tone(digit, duration)
    }

    /// Sends a final report with an RTCP BYE (RFC 3550 §6.6), e.g. when the call ends.
    pub fn close(&mut self, now: Instant) {
        self.send_report(now, true);
    }

    /// When the next frame tick is due (`None` only if the schedule ran past the representable
    /// time). [`MediaOutput::Timeout`] gives the earliest of all deadlines (tick, RTCP report,
    /// DTMF and RTP timeouts); a runtime that serves many streams may run the others a little
    /// late, at a tick, to wake up less often.
    pub fn next_tick(&self) -> Option<Instant> {
        self.clock.next_time()
    }

    /// The next output: transmissions and events first, then the next deadline. With SRTP a
    /// transmission is protected here; one the context refuses is dropped (it cannot be, for
    /// keys voxline accepts, before 2^48 packets).
    pub fn poll_output(&mut self) -> MediaOutput {
        loop {
            match self.out.pop_front() {
                Some(MediaOutput::Transmit {
                    to,
                    mut payload,
                    rtcp,
                }) if self.srtp.is_on() => {
                    if self.srtp.protect(&mut payload, rtcp) {
                        return MediaOutput::Transmit { to, payload, rtcp };
                    }
                    self.send.recycle_packet(payload);
                }
                Some(o) => return o,
                None => return MediaOutput::Timeout(self.next_deadline()),
            }
        }
    }

    /// The PCM rate of the decoder and encoder: 8000 for G.711, 16000 for G.722, the Opus
    /// encoding rate for Opus.
    pub fn sample_rate(&self) -> u32 {
        self.clock.layout().sample_rate
    }

    /// The PCM rate a stream for `negotiated` will run at ([`Self::sample_rate`]), without
    /// building the stream: lets the call layer choose an AI backend's audio format before the
    /// media starts.
    pub fn pcm_rate(negotiated: &NegotiatedMedia) -> Result<u32, MediaError> {
        Ok(build_encoder(negotiated)?.1.sample_rate)
    }

    /// PCM samples per frame at [`Self::sample_rate`].
    pub fn frame_samples(&self) -> usize {
        self.clock.layout().frame_samples
    }

    /// The frame duration (the tick period).
    pub fn frame_duration(&self) -> Duration {
        self.clock.layout().frame()
    }

    /// Agent audio queued and not yet sent (PCM and encoded).
    pub fn queued_audio(&self) -> Duration {
        self.send.queued()
    }

    /// The audio the ticks due at `now` will play: one frame for each tick whose time has
    /// come, several after a late wake-up. A feeder that tops the queue up by this much
    /// before [`Self::handle_timeout`] never has a catch-up play silence while audio waits.
    pub fn due_audio(&self, now: Instant) -> Duration {
        let frame_ns = self.clock.layout().frame_ns.max(1);
        match self.clock.next_time() {
            Some(t) if t <= now => {
                let behind = u64::try_from((now - t).as_nanos()).unwrap_or(u64::MAX);
                let ticks = behind / frame_ns + 1;
                Duration::from_nanos(frame_ns.saturating_mul(ticks))
            }
            _ => Duration::ZERO,
        }
    }

    /// Whether we send RTP now: our direction sends (not on hold) and the peer gave a usable
    /// address. While not sending, agent audio queued by [`Self::send_audio`] waits.
    pub fn is_sending(&self) -> bool {
        self.sending()
    }

    /// Whether a key press is being sent or waiting to be.
    pub fn dtmf_busy(&self) -> bool {
        self.send.dtmf_busy()
    }

    /// Our SSRC.
    pub fn local_ssrc(&self) -> Ssrc {
        self.send.ssrc()
    }

    /// The session as last negotiated.
    pub fn negotiated(&self) -> &NegotiatedMedia {
        &self.negotiated
    }

    /// Exact milliseconds of agent audio (not silence) put on the wire so far, PCM and
    /// encoded (8 bytes a millisecond).
    pub fn agent_ms_sent(&self) -> u64 {
        self.send.agent_ms()
    }

    /// The counters and quality figures now.
    pub fn stats(&self) -> MediaStats {
        let rtp = self.recv.rtp_stats();
        let receiver = self.recv.rtp_ref();
        let loss = receiver.loss();
        let jb = self.recv.jitter_stats();
        let jitter = receiver.jitter_duration();
        let rtt = self.rtcp_stats.rtt;
        let (source_expected, source_lost) =
            loss.map_or((0, 0), |l| (l.expected, l.cumulative_lost));
        let totals = self.recv.loss_totals();
        let (expected, lost) = (totals.expected, totals.lost);
        // What never played over what should have, over the whole call, capped at 100 %.
        let should_have = totals.received + lost;
        let loss_percent = if should_have == 0 {
            0.0
        } else {
            ((lost + jb.late) as f64 * 100.0 / should_have as f64).min(100.0)
        };
        let one_way = rtt.map_or(Duration::ZERO, |r| r / 2) + jb.current_delay;
        let q = quality::estimate(&QualityInput {
            codec: CodecImpairment::for_codec(self.negotiated.codec.codec),
            packet_loss_percent: loss_percent,
            burst_ratio: 1.0,
            one_way_delay: one_way,
            jitter,
        });
        let remote = self.rtcp_stats.remote_block;
        let te_rate = f64::from(self.clock.layout().clock_rate);
        MediaStats {
            codec: self.negotiated.codec.codec.encoding_name(),
            sample_rate: self.sample_rate(),
            frame_ms: ms(self.frame_duration()),
            local_ssrc: self.send.ssrc().0,
            remote_ssrc: self.recv.remote_ssrc().map(|s| s.0),
            sending: self.sending(),
            ticks: self.ticks,
            late_ticks: self.late_ticks,
            packets_sent: self.send.packets,
            bytes_sent: self.send.octets,
            dtmf_packets_sent: self.send.dtmf_packets,
            agent_ms_sent: self.send.agent_ms(),
            queued_ms: ms(self.send.queued()),
            packets_received: rtp.accepted,
            bytes_received: self.recv.octets,
            packets_expected: expected,
            packets_lost: lost,
            source_packets_expected: source_expected,
            source_packets_lost: source_lost,
            fraction_lost: f64::from(self.last_fraction_lost) / 256.0,
            jitter_ms: ms(jitter),
            rtt_ms: rtt.map(ms),
            r_factor: q.r,
            mos: q.mos,
            jitter_buffer_target_ms: ms(jb.target_delay),
            jitter_buffer_current_ms: ms(jb.current_delay),
            concealment_ratio: jb.concealment_ratio(),
            fec_recovered: self.recv.fec_recovered,
            latched: self.latch.latched(),
            rtcp_peer: self.latch.rtcp_peer(&self.negotiated),
            ssrc_changes: rtp.ssrc_changes,
            dropped_foreign: self.dropped_foreign,
            dropped_malformed: rtp.too_short + rtp.bad_version + rtp.malformed,
            dropped_implausible: rtp.implausible,
            dropped_unknown_pt: rtp.unknown_pt,
            dropped_duplicate: rtp.duplicate + jb.duplicate,
            dropped_sequence: rtp.old + rtp.jump + rtp.probation,
            dropped_late: jb.late,
            dropped_overflow: jb.overflow,
            decode_errors: self.recv.decode_errors,
            encode_errors: self.send.encode_errors,
            dtmf_errors: self.recv.dtmf_errors,
            rtcp_sent: self.rtcp_stats.sent,
            rtcp_received: self.rtcp_stats.received,
            rtcp_malformed: self.rtcp_stats.malformed,
            rtcp_dropped_foreign: self.rtcp_stats.foreign,
            remote_fraction_lost: remote.map(|b| f64::from(b.fraction_lost) / 256.0),
            remote_packets_lost: remote.map(|b| i64::from(b.cumulative_lost)),
            remote_jitter_ms: remote.map(|b| f64::from(b.jitter) * 1000.0 / te_rate),
            srtp: self.srtp.is_on(),
            srtp_suite: self.srtp.suite().map(crate::sdp::SrtpSuite::name),
            srtp_auth_failed: self.srtp.auth_failed,
            srtp_replayed: self.srtp.replayed,
        }
    }
}

impl fmt::Debug for MediaStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaStream")
            .field("codec", &self.negotiated.codec.codec)
            .field("direction", &self.negotiated.direction)
            .field("local_ssrc", &self.send.ssrc())
            .field("next_tick", &self.clock.next_time())
            .field("latched", &self.latch.latched())
            .finish_non_exhaustive()
    }
}

/// RTCP bookkeeping.
#[derive(Debug, Clone, Copy, Default)]
struct RtcpState {
    rtt: Option<Duration>,
    remote_block: Option<rtcp::ReportBlock>,
    sent: u64,
    received: u64,
    malformed: u64,
    foreign: u64,
    bye: bool,
}

impl MediaStream {
    fn emit(&mut self, e: MediaEvent) {
        self.out.push_back(MediaOutput::Event(e));
    }

    /// Whether we send now: our direction sends and the peer gave a usable address.
    fn sending(&self) -> bool {
        let to = self.negotiated.remote_rtp;
        self.negotiated.direction.sends() && !to.ip().is_unspecified() && to.port() != 0
    }

    /// Whether the peer should be sending to us.
    fn expects_rtp(&self) -> bool {
        self.negotiated.direction.receives() && !self.negotiated.remote_hold
    }

    fn rtp_timeout_deadline(&self) -> Option<Instant> {
        if self.timeout_fired || !self.expects_rtp() {
            return None;
        }
        self.last_rx.checked_add(self.rtp_timeout?)
    }

    fn next_deadline(&self) -> Instant {
        let mut t = self.rtcp.next_due();
        for d in [
            self.clock.next_time(),
            self.recv.dtmf_deadline(),
            self.rtp_timeout_deadline(),
        ]
        .into_iter()
        .flatten()
        {
            t = t.min(d);
        }
        t
    }

    /// The first tick time at or after `now`.
    fn next_tick_after(&self, now: Instant) -> Instant {
        let mut n = self.clock.next();
        let frame_ns = self.clock.layout().frame_ns.max(1);
        if let Some(t) = self.clock.tick_time(n)
            && t < now
        {
            let behind = u64::try_from((now - t).as_nanos()).unwrap_or(u64::MAX);
            n = n.saturating_add(behind.div_ceil(frame_ns));
        }
        self.clock.tick_time(n).unwrap_or(now)
    }

    fn rtcp_in(&mut self, now: Instant, source: SocketAddr, datagram: &[u8], via_rtp: bool) {
        if !self
            .latch
            .admit_rtcp(now, source, &self.negotiated, via_rtp)
        {
            self.rtcp_stats.foreign += 1;
            return;
        }
        if !self.srtp.is_on() {
            self.rtcp_parse(now, datagram);
            return;
        }
        if let Some(plain) = self.srtp.unprotect(datagram, true) {
            self.rtcp_parse(now, &plain);
            self.srtp.put_back(plain);
        }
    }

    /// An admitted RTCP compound packet, in the clear.
    fn rtcp_parse(&mut self, now: Instant, datagram: &[u8]) {
        let packets = match parse_compound(datagram) {
            Ok(p) => p,
            Err(_) => {
                self.rtcp_stats.malformed += 1;
                return;
            }
        };
        self.rtcp_stats.received += 1;
        let local = self.send.ssrc();
        for p in packets {
            match p {
                RtcpPacket::SenderReport {
                    ssrc,
                    info,
                    reports,
                } => {
                    self.recv.rtp().note_sender_report(now, ssrc, info.ntp);
                    self.note_blocks(now, local, &reports);
                }
                RtcpPacket::ReceiverReport { reports, .. } => {
                    self.note_blocks(now, local, &reports);
                }
                RtcpPacket::Bye { ssrcs, .. } => {
                    let remote = self.recv.remote_ssrc();
                    let theirs = ssrcs
                        .iter()
                        .any(|s| *s != local && remote.is_none_or(|r| r == *s));
                    if theirs && !self.rtcp_stats.bye {
                        self.rtcp_stats.bye = true;
                        self.emit(MediaEvent::RemoteBye);
                    }
                }
                RtcpPacket::SourceDescription(_) | RtcpPacket::Other { .. } => {}
            }
        }
    }

    fn note_blocks(&mut self, now: Instant, local: Ssrc, blocks: &[rtcp::ReportBlock]) {
        for b in blocks.iter().filter(|b| b.ssrc == local) {
            if let Some(rtt) = self.ntp.round_trip_time(now, b) {
                self.rtcp_stats.rtt = Some(rtt);
            }
            self.rtcp_stats.remote_block = Some(*b);
        }
    }

    /// Sends SR/RR + SDES (+ BYE) to the RTCP peer, if there is one.
    fn send_report(&mut self, now: Instant, bye: bool) {
        let Some(to) = self.latch.rtcp_peer(&self.negotiated) else {
            return;
        };
        if to.ip().is_unspecified() || to.port() == 0 {
            return;
        }
        let block = self.recv.rtp().report_block(now);
        if let Some(b) = block {
            self.last_fraction_lost = b.fraction_lost;
        }
        let blocks: Vec<rtcp::ReportBlock> = block.into_iter().collect();
        let sender = self.send.sent_since_report.then(|| SenderInfo {
            ntp: self.ntp.ntp(now),
            rtp_ts: self.clock.ts_at(now),
            packet_count: self.send.packets as u32,
            octet_count: self.send.octets as u32,
        });
        let report = CompoundReport {
            ssrc: self.send.ssrc(),
            sender,
            blocks: &blocks,
            cname: &self.cname,
        };
        let bye_len = if bye { rtcp::RTCP_HEADER_LEN + 4 } else { 0 };
        let mut buf = vec![0u8; report.len() + bye_len];
        let Ok(n) = report.write(&mut buf) else {
            return;
        };
        if bye {
            let Some(rest) = buf.get_mut(n..) else {
                return;
            };
            if write_bye(rest, self.send.ssrc(), None).is_err() {
                return;
            }
        }
        self.send.sent_since_report = false;
        self.rtcp_stats.sent += 1;
        self.out.push_back(MediaOutput::Transmit {
            to,
            payload: buf,
            rtcp: true,
        });
    }
}

/// The encoder for `neg` and the frame layout it implies.
fn build_encoder(
    neg: &NegotiatedMedia,
) -> Result<(Box<dyn crate::media::codec::AudioEncoder>, Layout), MediaError> {
    let encoder = encoder_for(&neg.codec, neg.ptime_ms)?;
    let sample_rate = encoder.sample_rate();
    let frame_samples = encoder.frame_samples();
    let clock_rate = match neg.codec.clock_rate {
        0 => Codec::clock_rate(neg.codec.codec),
        r => r,
    };
    let layout = Layout::new(sample_rate, frame_samples, clock_rate).ok_or(MediaError::Layout {
        sample_rate,
        frame_samples,
    })?;
    Ok((encoder, layout))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::rtcp::NtpTime;
    use crate::sdp::{Direction, NegotiatedCodec, PayloadType};

    fn neg(codec: Codec, pt: u8) -> NegotiatedMedia {
        NegotiatedMedia {
            remote_rtp: "192.0.2.1:4000".parse().unwrap(),
            remote_rtcp: Some("192.0.2.1:4001".parse().unwrap()),
            codec: NegotiatedCodec {
                codec,
                payload_type: PayloadType::new(pt).unwrap(),
                clock_rate: codec.clock_rate(),
                channels: codec.channels(),
                fmtp: None,
            },
            telephone_event: None,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            rtcp_mux: false,
            remote_hold: false,
            srtp: None,
        }
    }

    fn cfg(n: NegotiatedMedia, t0: Instant) -> MediaConfig {
        MediaConfig::new(n, Ssrc(9), "x@y", NtpClock::new(t0, NtpTime(0)), 1)
    }

    #[test]
    fn defaults_and_geometry() {
        let t0 = Instant::now();
        let c = cfg(neg(Codec::G722, 9), t0);
        assert_eq!(c.jitter_min, DEFAULT_JITTER_MIN);
        assert_eq!(c.outbound_capacity, DEFAULT_OUTBOUND_CAPACITY);
        assert_eq!(c.rtp_timeout, None);
        let s = MediaStream::new(c, t0).unwrap();
        assert_eq!(s.sample_rate(), 16000);
        assert_eq!(s.frame_samples(), 320);
        assert_eq!(s.frame_duration(), Duration::from_millis(20));
        assert!(format!("{s:?}").contains("G722"));
    }

    #[test]
    fn rejects_bad_configs() {
        let t0 = Instant::now();
        let mut c = cfg(neg(Codec::Pcmu, 0), t0);
        c.cname = "x".repeat(256);
        assert_eq!(
            MediaStream::new(c, t0).err(),
            Some(MediaError::CnameTooLong(256))
        );
        let mut c = cfg(neg(Codec::Pcmu, 0), t0);
        c.jitter_min = Duration::from_millis(300);
        assert!(matches!(
            MediaStream::new(c, t0),
            Err(MediaError::Jitter(JitterConfigError::DelayRange))
        ));
        let mut n = neg(Codec::Pcmu, 0);
        n.ptime_ms = 0;
        assert!(matches!(
            MediaStream::new(cfg(n, t0), t0),
            Err(MediaError::Codec(CodecError::UnsupportedPtime { .. }))
        ));
        let n = neg(Codec::TelephoneEvent, 101);
        assert!(matches!(
            MediaStream::new(cfg(n, t0), t0),
            Err(MediaError::Codec(CodecError::NotAudio(_)))
        ));
    }

    #[test]
    fn failed_update_changes_nothing() {
        let t0 = Instant::now();
        let mut s = MediaStream::new(cfg(neg(Codec::Pcmu, 0), t0), t0).unwrap();
        let mut n = neg(Codec::Pcmu, 0);
        n.ptime_ms = 500;
        assert!(s.update(t0, n).is_err());
        assert_eq!(s.negotiated().ptime_ms, 20);
        assert_eq!(s.frame_samples(), 160);
    }

    #[test]
    fn codec_change_keeps_the_schedule() {
        let t0 = Instant::now();
        let mut s = MediaStream::new(cfg(neg(Codec::Pcmu, 0), t0), t0).unwrap();
        s.handle_timeout(t0 + Duration::from_millis(40));
        s.send_audio(&[1; 800]).unwrap();
        s.update(t0 + Duration::from_millis(50), neg(Codec::G722, 9))
            .unwrap();
        assert_eq!(s.sample_rate(), 16000);
        assert_eq!(s.queued_audio(), Duration::ZERO, "8 kHz audio dropped");
        let mut packets = Vec::new();
        while let MediaOutput::Transmit { .. } | MediaOutput::Event(_) = s.poll_output() {}
        s.handle_timeout(t0 + Duration::from_millis(100));
        loop {
            match s.poll_output() {
                MediaOutput::Timeout(t) => {
                    assert_eq!(t, t0 + Duration::from_millis(120));
                    break;
                }
                MediaOutput::Transmit { payload, .. } => packets.push(payload),
                MediaOutput::Event(_) => {}
            }
        }
        // Ticks 60, 80, 100 ms, G.722 (PT 9), 160 octets, first one marked.
        assert_eq!(packets.len(), 3);
        assert!(packets.iter().all(|p| p[1] & 0x7f == 9 && p.len() == 172));
        assert!(packets[0][1] & 0x80 != 0);
    }

    /// Drains the outputs: the RTP packets sent (payload bytes) and the frame events' `sent`
    /// PCM, up to the next deadline.
    fn drain(s: &mut MediaStream) -> (Vec<Vec<u8>>, Vec<Vec<i16>>) {
        let (mut packets, mut sent) = (Vec::new(), Vec::new());
        loop {
            match s.poll_output() {
                MediaOutput::Timeout(_) => return (packets, sent),
                MediaOutput::Transmit { payload, rtcp, .. } if !rtcp => packets.push(payload),
                MediaOutput::Event(MediaEvent::Frame { sent: pcm, .. }) => sent.push(pcm),
                _ => {}
            }
        }
    }

    /// The `caller_encoded` of every frame event the stream emits until its next deadline.
    fn encoded_frames(s: &mut MediaStream) -> Vec<Option<Vec<u8>>> {
        let mut v = Vec::new();
        loop {
            match s.poll_output() {
                MediaOutput::Timeout(_) => return v,
                MediaOutput::Event(MediaEvent::Frame { caller_encoded, .. }) => {
                    v.push(caller_encoded)
                }
                _ => {}
            }
        }
    }

    fn ts(p: &[u8]) -> u32 {
        u32::from_be_bytes([p[4], p[5], p[6], p[7]])
    }

    fn seq(p: &[u8]) -> u16 {
        u16::from_be_bytes([p[2], p[3]])
    }

    #[test]
    fn send_ahead_starts_a_talkspurt_before_its_tick_and_keeps_the_schedule() {
        let t0 = Instant::now();
        let ms = |m: u64| t0 + Duration::from_millis(m);
        let mut s = MediaStream::new(cfg(neg(Codec::Pcmu, 0), t0), t0).unwrap();
        // Ticks at 0 and 20 ms send silence.
        s.handle_timeout(ms(20));
        let (silence, _) = drain(&mut s);
        assert_eq!(silence.len(), 2);
        // Nothing queued: nothing to send ahead.
        assert!(!s.send_ahead(ms(25)));
        // A reply arrives at 25 ms: its first packet leaves at once, as tick 40's packet.
        s.send_encoded(&[0x11; 480]).unwrap();
        assert!(s.send_ahead(ms(25)));
        let (early, events) = drain(&mut s);
        assert!(events.is_empty(), "no frame event before the tick");
        assert_eq!(early.len(), 1);
        let p = &early[0];
        assert!(p[1] & 0x80 != 0, "marker bit at the talkspurt start");
        assert_eq!(
            ts(p),
            ts(&silence[1]).wrapping_add(160),
            "tick 40's timestamp"
        );
        assert_eq!(seq(p), seq(&silence[1]).wrapping_add(1));
        assert!(p[12..].iter().all(|&b| b == 0x11));
        // Already talking: no second early packet.
        assert!(!s.send_ahead(ms(30)));
        // Tick 40 sends nothing new but reports what went out; ticks 60 and 80 go on.
        s.handle_timeout(ms(80));
        let (later, events) = drain(&mut s);
        assert_eq!(events.len(), 3);
        assert!(
            events[0].iter().all(|&v| v != 0),
            "tick 40's frame is the early packet"
        );
        assert_eq!(later.len(), 2, "ticks 60 and 80 only");
        assert_eq!(ts(&later[0]), ts(p).wrapping_add(160));
        assert_eq!(seq(&later[0]), seq(p).wrapping_add(1));
        assert!(later[0][1] & 0x80 == 0, "no marker inside the talkspurt");
        assert_eq!(s.agent_ms_sent(), 60);
        // At a tick's own time nothing is sent ahead (the tick does it).
        s.send_encoded(&[0x22; 160]).unwrap();
        assert!(!s.send_ahead(ms(100)));
    }

    #[test]
    fn caller_encoded_can_be_turned_off_and_stays_off_across_a_codec_change() {
        let t0 = Instant::now();
        let mut s = MediaStream::new(cfg(neg(Codec::Pcmu, 0), t0), t0).unwrap();
        s.handle_timeout(t0);
        // On by default: one frame of μ-law silence (0xFF) when nothing was received.
        assert_eq!(encoded_frames(&mut s), vec![Some(vec![0xFF; 160])]);
        s.set_caller_encoded(false);
        s.handle_timeout(t0 + Duration::from_millis(20));
        assert_eq!(encoded_frames(&mut s), vec![None]);
        s.update(t0 + Duration::from_millis(30), neg(Codec::Pcma, 8))
            .unwrap();
        s.handle_timeout(t0 + Duration::from_millis(40));
        assert_eq!(encoded_frames(&mut s), vec![None]);
        s.set_caller_encoded(true);
        s.handle_timeout(t0 + Duration::from_millis(60));
        assert_eq!(encoded_frames(&mut s), vec![Some(vec![0xD5; 160])]);
    }
}
