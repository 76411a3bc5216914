//! The receiving half of a stream: RTP validation, jitter buffer, decoding or concealment
//! per tick, and DTMF in all three forms.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::codec::{AudioDecoder, OpusDecoder, decoder_for};
use crate::media::dtmf::inband::InbandConfig;
use crate::media::dtmf::rfc4733::Rfc4733ReceiverConfig;
use crate::media::dtmf::{DtmfDetector, DtmfDetectorConfig};
use crate::media::jitter::{ConcealCause, JitterBuffer, JitterConfig, JitterStats, Playout};
use crate::media::rtp::{
    Received, RtpDrop, RtpReceiver, RtpReceiverConfig, RtpReceiverStats, Ssrc,
};
use crate::media::spares::Spares;
use crate::sdp::{Codec, NegotiatedMedia, PayloadType};

use super::clock::Layout;
use super::law::Law;
use super::{MediaError, MediaEvent, MediaOutput};

/// Sample rates the in-band DTMF detector runs at.
const INBAND_RATES: [u32; 4] = [8000, 16000, 32000, 48000];

/// Receive-side state.
/// How many spent buffers of one kind a stream keeps for reuse.
pub(super) const POOL_MAX: usize = 4;

pub(super) struct Receiver {
    /// Spent PCM buffers handed back by the caller, reused for the next ticks.
    pcm_pool: Spares<Vec<i16>, POOL_MAX>,
    /// The same for the caller's G.711 bytes.
    byte_pool: Spares<Vec<u8>, POOL_MAX>,
    /// The G.711 law when the codec is PCMU or PCMA: the caller's bytes are reported too.
    law: Option<Law>,
    /// Whether the caller's G.711 bytes are reported (see [`Receiver::set_encoded_frames`]).
    encoded_frames: bool,
    rtp: RtpReceiver,
    /// Counters of receivers replaced by a re-INVITE.
    rtp_prior: RtpReceiverStats,
    jitter: JitterBuffer,
    decoder: Box<dyn AudioDecoder>,
    dtmf: DtmfDetector,
    audio_pt: PayloadType,
    te_pt: Option<PayloadType>,
    inband: bool,
    frame_samples: usize,
    scratch: Vec<i16>,
    remote_ssrc: Option<Ssrc>,
    /// Payload octets of accepted packets.
    pub octets: u64,
    /// Payloads the decoder refused (concealed instead).
    pub decode_errors: u64,
    /// Malformed telephone-event payloads and INFO bodies.
    pub dtmf_errors: u64,
    /// Frames recovered from Opus in-band FEC.
    pub fec_recovered: u64,
}

impl Receiver {
    /// The receive pipeline for `neg`, decoding at `layout.sample_rate`.
    pub fn new(
        neg: &NegotiatedMedia,
        layout: &Layout,
        jitter_min: Duration,
        jitter_max: Duration,
        te_clock_rate: u32,
    ) -> Result<Self, MediaError> {
        let decoder: Box<dyn AudioDecoder> = match neg.codec.codec {
            Codec::Opus => Box::new(OpusDecoder::new(layout.sample_rate)?),
            _ => decoder_for(&neg.codec)?,
        };
        if decoder.sample_rate() != layout.sample_rate {
            return Err(MediaError::SampleRateMismatch {
                encoder: layout.sample_rate,
                decoder: decoder.sample_rate(),
            });
        }
        let audio_pt = neg.codec.payload_type;
        let te_pt = neg.telephone_event;
        let rtp = RtpReceiver::new(RtpReceiverConfig::new(
            layout.clock_rate,
            vec![audio_pt],
            te_pt,
        ));
        let mut jc = JitterConfig::new(layout.clock_rate, layout.frame());
        jc.min_delay = jitter_min;
        jc.max_delay = jitter_max;
        if layout.frame_ns > 0 {
            let span = (Duration::from_secs(1) + jitter_max).as_nanos();
            jc.capacity = usize::try_from(span / u128::from(layout.frame_ns))
                .unwrap_or(usize::MAX)
                .max(2);
        }
        let jitter = JitterBuffer::new(jc)?;
        let inband = te_pt.is_none() && INBAND_RATES.contains(&layout.sample_rate);
        let dtmf = DtmfDetector::new(DtmfDetectorConfig {
            rfc4733: Rfc4733ReceiverConfig {
                clock_rate: te_clock_rate,
                ..Rfc4733ReceiverConfig::default()
            },
            inband: inband.then(|| InbandConfig {
                sample_rate: layout.sample_rate,
                ..InbandConfig::default()
            }),
            ..DtmfDetectorConfig::default()
        })?;
        Ok(Self {
            pcm_pool: Spares::default(),
            byte_pool: Spares::default(),
            law: Law::of(neg.codec.codec),
            encoded_frames: true,
            rtp,
            rtp_prior: RtpReceiverStats::default(),
            jitter,
            decoder,
            dtmf,
            audio_pt,
            te_pt,
            inband,
            frame_samples: layout.frame_samples,
            scratch: Vec::with_capacity(layout.frame_samples * 2),
            remote_ssrc: None,
            octets: 0,
            decode_errors: 0,
            dtmf_errors: 0,
            fec_recovered: 0,
        })
    }

    /// Takes over the counters of the pipeline this one replaces.
    pub fn inherit(&mut self, old: &Receiver) {
        self.rtp_prior = add_stats(old.rtp_prior, old.rtp.stats());
        self.octets = old.octets;
        self.decode_errors = old.decode_errors;
        self.dtmf_errors = old.dtmf_errors;
        self.fec_recovered = old.fec_recovered;
        self.remote_ssrc = old.remote_ssrc;
    }

    /// Whether ticks report the caller's G.711 bytes as well as the PCM (on by default).
    pub fn set_encoded_frames(&mut self, on: bool) {
        self.encoded_frames = on;
    }

    /// Whether `pt` is one of the negotiated payload types.
    pub fn accepts(&self, pt: PayloadType) -> bool {
        pt == self.audio_pt || Some(pt) == self.te_pt
    }

    /// Validates a datagram (counted in the RTP stats if dropped).
    pub fn validate<'a>(
        &mut self,
        now: Instant,
        datagram: &'a [u8],
    ) -> Result<Received<'a>, RtpDrop> {
        self.rtp.receive(now, datagram)
    }

    /// Handles an accepted packet: events to the DTMF receiver, audio to the jitter buffer.
    pub fn accept(&mut self, now: Instant, rec: &Received<'_>, out: &mut VecDeque<MediaOutput>) {
        let p = &rec.packet;
        if rec.new_stream {
            match self.remote_ssrc {
                Some(old) if old != p.ssrc => {
                    self.jitter.new_stream();
                    self.dtmf.new_rtp_stream();
                    out.push_back(MediaOutput::Event(MediaEvent::SsrcChanged { ssrc: p.ssrc }));
                }
                Some(_) => {
                    self.jitter.new_stream();
                    self.dtmf.new_rtp_stream();
                }
                None => {}
            }
        }
        self.remote_ssrc = Some(p.ssrc);
        self.octets += p.payload.len() as u64;
        if Some(p.payload_type) == self.te_pt {
            match self
                .dtmf
                .handle_rtp_event(now, p.timestamp.0, p.marker, p.payload)
            {
                Ok(Some(d)) => out.push_back(MediaOutput::Event(MediaEvent::Dtmf(d))),
                Ok(None) => {}
                Err(_) => self.dtmf_errors += 1,
            }
        } else {
            self.jitter
                .push(now, p.seq, p.timestamp, p.marker, p.payload);
        }
    }

    /// One frame tick at `at`: the caller's audio for this frame, exactly one frame long, and
    /// for G.711 calls the caller's bytes for it (see [`super::MediaEvent::Frame`]).
    pub fn tick(
        &mut self,
        at: Instant,
        out: &mut VecDeque<MediaOutput>,
    ) -> (Vec<i16>, Option<Vec<u8>>) {
        let n = self.frame_samples;
        let mut pcm = self.pcm_pool.take().unwrap_or_default();
        pcm.clear();
        pcm.reserve(n);
        // The payload played as it is, if any (not on concealment or a decode error).
        let mut played: Option<&[u8]> = None;
        match self.jitter.pop(at) {
            Playout::Frame(f) => {
                if self.decoder.decode(f.payload, &mut pcm).is_err() {
                    self.decode_errors += 1;
                    pcm.clear();
                    let _ = self.decoder.conceal(n, &mut pcm);
                } else {
                    played = Some(f.payload);
                }
            }
            Playout::Compress(a, b) => {
                // Keep the decoder state continuous, play only the later frame.
                self.scratch.clear();
                if self.decoder.decode(a.payload, &mut self.scratch).is_err() {
                    self.decode_errors += 1;
                }
                if self.decoder.decode(b.payload, &mut pcm).is_err() {
                    self.decode_errors += 1;
                    pcm.clear();
                    let _ = self.decoder.conceal(n, &mut pcm);
                } else {
                    played = Some(b.payload);
                }
            }
            Playout::Conceal { next, cause, .. } => {
                // FEC only for a frame that is really missing: a stretch frame has no packet
                // of its own, and the next packet's FEC data is the frame already played.
                let recovered = match (cause, next) {
                    (ConcealCause::Missing, Some(f)) => {
                        matches!(self.decoder.decode_fec(f.payload, n, &mut pcm), Ok(true))
                    }
                    _ => false,
                };
                if recovered {
                    self.fec_recovered += 1;
                } else {
                    pcm.clear();
                    if self.decoder.conceal(n, &mut pcm).is_err() {
                        pcm.clear();
                    }
                }
            }
            Playout::Silence { .. } => {}
        }
        pcm.resize(n, 0);
        let encoded = self.law.filter(|_| self.encoded_frames).map(|law| {
            let mut bytes = self.byte_pool.take().unwrap_or_default();
            bytes.clear();
            // The payload as received, cut to one frame like the PCM; the rest of the frame
            // (all of it when nothing was played) is the encoding of the PCM.
            let raw = played.unwrap_or_default();
            let raw = raw.get(..n).unwrap_or(raw);
            bytes.extend_from_slice(raw);
            let rest = pcm.get(raw.len()..).unwrap_or_default();
            law.encode_into(rest, &mut bytes);
            bytes
        });
        if self.inband {
            for d in self.dtmf.handle_audio(at, &pcm) {
                out.push_back(MediaOutput::Event(MediaEvent::Dtmf(d)));
            }
        }
        (pcm, encoded)
    }

    /// A SIP INFO DTMF body.
    pub fn info(
        &mut self,
        now: Instant,
        content_type: &str,
        body: &[u8],
        out: &mut VecDeque<MediaOutput>,
    ) {
        match self.dtmf.handle_info(now, content_type, body) {
            Ok(Some(d)) => out.push_back(MediaOutput::Event(MediaEvent::Dtmf(d))),
            Ok(None) => {}
            Err(_) => self.dtmf_errors += 1,
        }
    }

    /// Runs the RFC 4733 end timeout.
    pub fn dtmf_timeout(&mut self, now: Instant, out: &mut VecDeque<MediaOutput>) {
        if self.dtmf.poll_timeout().is_some_and(|t| t <= now) {
            while let Some(d) = self.dtmf.handle_timeout(now) {
                out.push_back(MediaOutput::Event(MediaEvent::Dtmf(d)));
            }
        }
    }

    /// When the RFC 4733 receiver needs [`Self::dtmf_timeout`].
    pub fn dtmf_deadline(&self) -> Option<Instant> {
        self.dtmf.poll_timeout()
    }

    /// Takes back a caller-audio buffer from a `Frame` event for reuse.
    pub fn recycle(&mut self, v: Vec<i16>) {
        self.pcm_pool.put(v);
    }

    /// Takes back a caller-bytes buffer from a `Frame` event for reuse.
    pub fn recycle_bytes(&mut self, v: Vec<u8>) {
        self.byte_pool.put(v);
    }

    /// The RTP receiver (report blocks, SR notes, loss and jitter).
    pub fn rtp(&mut self) -> &mut RtpReceiver {
        &mut self.rtp
    }

    /// The RTP receiver, read-only.
    pub fn rtp_ref(&self) -> &RtpReceiver {
        &self.rtp
    }

    /// All RTP counters, including those of replaced receivers.
    pub fn rtp_stats(&self) -> RtpReceiverStats {
        add_stats(self.rtp_prior, self.rtp.stats())
    }

    /// The jitter buffer's statistics.
    pub fn jitter_stats(&self) -> JitterStats {
        self.jitter.stats()
    }

    /// The SSRC being received, if any.
    pub fn remote_ssrc(&self) -> Option<Ssrc> {
        self.remote_ssrc
    }
}

fn add_stats(a: RtpReceiverStats, b: RtpReceiverStats) -> RtpReceiverStats {
    RtpReceiverStats {
        datagrams: a.datagrams + b.datagrams,
        accepted: a.accepted + b.accepted,
        too_short: a.too_short + b.too_short,
        bad_version: a.bad_version + b.bad_version,
        malformed: a.malformed + b.malformed,
        unknown_pt: a.unknown_pt + b.unknown_pt,
        duplicate: a.duplicate + b.duplicate,
        old: a.old + b.old,
        jump: a.jump + b.jump,
        probation: a.probation + b.probation,
        reordered: a.reordered + b.reordered,
        markers: a.markers + b.markers,
        ssrc_changes: a.ssrc_changes + b.ssrc_changes,
        restarts: a.restarts + b.restarts,
    }
}
