//! The receiving half of a stream: RTP validation, jitter buffer, decoding or concealment
//! per tick, and DTMF in all three forms.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::media::codec::{AudioDecoder, OpusDecoder, decoder_for};
use crate::media::dtmf::inband::InbandConfig;
use crate::media::dtmf::rfc4733::Rfc4733ReceiverConfig;
use crate::media::dtmf::{DtmfDetector, DtmfDetectorConfig};
use crate::media::jitter::{
    Adjust, ConcealCause, JitterBuffer, JitterConfig, JitterStats, Segment, default_capacity,
};
use crate::media::rtp::{
    LossTotals, Received, RtpDrop, RtpReceiver, RtpReceiverConfig, RtpReceiverStats, RtpTimestamp,
    SeqNo, Ssrc,
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
    /// Loss figures of receivers replaced by a re-INVITE.
    loss_prior: LossTotals,
    jitter: JitterBuffer,
    decoder: Box<dyn AudioDecoder>,
    dtmf: DtmfDetector,
    audio_pt: PayloadType,
    te_pt: Option<PayloadType>,
    inband: bool,
    frame_samples: usize,
    sample_rate: u32,
    clock_rate: u32,
    /// The decoding of a packet spread over two frames, for the second one.
    partial: Vec<i16>,
    /// Which packet `partial` is (sequence number and timestamp).
    partial_key: Option<(SeqNo, RtpTimestamp)>,
    /// Whether that packet decoded.
    partial_ok: bool,
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
        jc.capacity = default_capacity(jitter_max);
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
            loss_prior: LossTotals::default(),
            jitter,
            decoder,
            dtmf,
            audio_pt,
            te_pt,
            inband,
            frame_samples: layout.frame_samples,
            sample_rate: layout.sample_rate,
            clock_rate: layout.clock_rate,
            partial: Vec::new(),
            partial_key: None,
            partial_ok: false,
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
        self.loss_prior = old.loss_totals();
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
                    self.partial_key = None;
                    self.jitter.new_stream();
                    self.dtmf.new_rtp_stream();
                    out.push_back(MediaOutput::Event(MediaEvent::SsrcChanged { ssrc: p.ssrc }));
                }
                Some(_) => {
                    self.partial_key = None;
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
            match self.decoder.payload_duration(p.payload) {
                Ok(ticks) => {
                    self.jitter
                        .push(now, p.seq, p.timestamp, p.marker, p.payload, ticks);
                }
                Err(_) => self.decode_errors += 1,
            }
        }
    }

    /// One frame tick at `at`: the caller's audio for this frame, exactly one frame long, and
    /// for G.711 calls the caller's bytes for it (see [`super::MediaEvent::Frame`]).
    ///
    /// The jitter buffer says which ticks of which packets make up the frame, whatever their
    /// sizes; a packet spread over two frames is decoded once, when its first part plays, and
    /// the rest kept for the next frame. G.711 bytes are the payloads' own, slice for slice;
    /// only concealed and silent spans are encoded.
    pub fn tick(
        &mut self,
        at: Instant,
        out: &mut VecDeque<MediaOutput>,
    ) -> (Vec<i16>, Option<Vec<u8>>) {
        let n = self.frame_samples;
        let mut pcm = self.pcm_pool.take().unwrap_or_default();
        pcm.clear();
        pcm.reserve(n);
        let law = self.law.filter(|_| self.encoded_frames);
        let mut bytes = law.map(|_| {
            let mut b = self.byte_pool.take().unwrap_or_default();
            b.clear();
            b
        });
        let sr = u64::from(self.sample_rate);
        let cr = u64::from(self.clock_rate).max(1);
        let playout = self.jitter.pop(at);
        let compress = playout.adjust() == Adjust::Compress;
        // Ticks of the timeline covered so far this frame: segment boundaries in samples are
        // computed from it, so the segments tile the frame exactly at any rate ratio.
        let mut t: u64 = 0;
        for seg in playout.segments() {
            let len = match seg {
                Segment::Audio { len, .. }
                | Segment::Conceal { len, .. }
                | Segment::Silence { len } => u64::from(len),
            };
            let s0 = t * sr / cr;
            t += len;
            let count = usize::try_from(t * sr / cr - s0).unwrap_or(0);
            let start = pcm.len();
            // The payload bytes that are this span, if it played a packet as received.
            let mut raw: Option<&[u8]> = None;
            match seg {
                Segment::Audio {
                    packet,
                    offset,
                    len,
                } => {
                    let decoded = if offset == 0 && len == packet.duration {
                        // The whole packet in this frame: decode straight into the frame.
                        match self.decoder.decode(packet.payload, &mut pcm) {
                            Ok(()) => true,
                            Err(_) => {
                                pcm.truncate(start);
                                false
                            }
                        }
                    } else {
                        let key = (packet.seq, packet.ts);
                        if self.partial_key != Some(key) {
                            self.partial.clear();
                            self.partial_ok = self
                                .decoder
                                .decode(packet.payload, &mut self.partial)
                                .is_ok();
                            self.partial_key = Some(key);
                        }
                        if self.partial_ok {
                            let from = usize::try_from(u64::from(offset) * sr / cr).unwrap_or(0);
                            let part = self.partial.get(from..).unwrap_or_default();
                            pcm.extend_from_slice(part.get(..count).unwrap_or(part));
                        }
                        self.partial_ok
                    };
                    if decoded {
                        let (o, l) = (offset as usize, len as usize);
                        raw = packet.payload.get(o..o + l);
                    } else {
                        self.decode_errors += 1;
                        let _ = self.decoder.conceal(count, &mut pcm);
                    }
                }
                Segment::Conceal { cause, next, .. } => {
                    // FEC only for a span that is really missing: a stretch has no packet of
                    // its own, and the next packet's FEC data is audio already played.
                    let recovered = match (cause, next) {
                        (ConcealCause::Missing, Some(f)) => matches!(
                            self.decoder.decode_fec(f.payload, count, &mut pcm),
                            Ok(true)
                        ),
                        _ => false,
                    };
                    if recovered {
                        self.fec_recovered += 1;
                    } else {
                        pcm.truncate(start);
                        if self.decoder.conceal(count, &mut pcm).is_err() {
                            pcm.truncate(start);
                        }
                    }
                }
                Segment::Silence { .. } => {}
            }
            pcm.resize(start + count, 0);
            if let (Some(law), Some(bytes)) = (law, bytes.as_mut()) {
                match raw.filter(|r| r.len() == count) {
                    Some(r) => bytes.extend_from_slice(r),
                    None => law.encode_into(pcm.get(start..).unwrap_or_default(), bytes),
                }
            }
        }
        if compress {
            // Two frames of the timeline in one slot: play the later one (the decoder state
            // stayed continuous through both).
            let extra = pcm.len().saturating_sub(n);
            pcm.drain(..extra);
            if let Some(b) = bytes.as_mut() {
                let extra = b.len().saturating_sub(n);
                b.drain(..extra);
            }
        }
        pcm.resize(n, 0);
        if let (Some(law), Some(b)) = (law, bytes.as_mut()) {
            b.resize(n, law.silence());
        }
        if self.inband {
            for d in self.dtmf.handle_audio(at, &pcm) {
                out.push_back(MediaOutput::Event(MediaEvent::Dtmf(d)));
            }
        }
        (pcm, bytes)
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

    /// Loss figures over the whole stream: every source, sequence restart and receiver.
    pub fn loss_totals(&self) -> LossTotals {
        self.loss_prior.plus(self.rtp.loss_totals())
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
        implausible: a.implausible + b.implausible,
        timeline_restarts: a.timeline_restarts + b.timeline_restarts,
        reordered: a.reordered + b.reordered,
        markers: a.markers + b.markers,
        ssrc_changes: a.ssrc_changes + b.ssrc_changes,
        restarts: a.restarts + b.restarts,
    }
}
