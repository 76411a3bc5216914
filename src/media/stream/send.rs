//! The sending half of a stream: the outbound agent-audio queues (PCM, and for G.711 calls
//! already-encoded bytes passed through as they are), one packet per tick, RFC 4733 events in
//! place of audio, and the counters an SR needs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::codec::AudioEncoder;
use crate::media::dtmf::Digit;
use crate::media::dtmf::rfc4733::{Rfc4733Sender, Rfc4733SenderConfig};
use crate::media::dtmf::tone::ToneSender;
use crate::media::rtp::{RTP_HEADER_LEN, RtpHeader, SeqNo, Ssrc};
use crate::sdp::{Codec, PayloadType};

use super::clock::{Layout, TickClock};
use super::law::Law;
use super::recv::POOL_MAX;
use super::{MediaError, MediaOutput};
use crate::media::spares::Spares;

/// Room reserved after the header for one encoded frame, to avoid regrowing the packet.
const PAYLOAD_RESERVE: usize = 320;

/// Send-side state.
pub(super) struct Sender {
    /// Spent PCM and packet buffers handed back by the caller, reused for the next ticks.
    pcm_pool: Spares<Vec<i16>, POOL_MAX>,
    pkt_pool: Spares<Vec<u8>, POOL_MAX>,
    encoder: Box<dyn AudioEncoder>,
    ssrc: Ssrc,
    pt: PayloadType,
    te_pt: Option<PayloadType>,
    dtmf: Option<Rfc4733Sender>,
    /// In-band key presses: tones in place of the agent's audio while they play.
    tones: ToneSender,
    seq: SeqNo,
    layout: Layout,
    /// Agent PCM still to send (codecs other than G.711).
    queue: VecDeque<i16>,
    /// The G.711 law when the codec is PCMU or PCMA: encoded passthrough is possible.
    law: Option<Law>,
    /// G.711 agent audio, one byte per sample, in the order queued: passthrough bytes and
    /// agent PCM encoded as it was queued. Played before `queue` (one of the two is empty).
    encoded: VecDeque<u8>,
    /// One push's worth of G.711 bytes on their way into `encoded`.
    scratch: Vec<u8>,
    capacity: Duration,
    capacity_samples: usize,
    /// The previous packet carried agent audio.
    last_agent: bool,
    /// The next audio packet gets the marker bit (first packet, resume, after an event).
    need_marker: bool,
    /// RTP sent since the last RTCP report.
    pub sent_since_report: bool,
    /// RTP packets sent (audio and events).
    pub packets: u64,
    /// RTP payload octets sent.
    pub octets: u64,
    /// Telephone-event packets sent.
    pub dtmf_packets: u64,
    /// Frames the encoder refused.
    pub encode_errors: u64,
    /// Agent samples sent at the current sample rate.
    agent_samples: u64,
    /// Agent audio sent at earlier sample rates, in nanoseconds.
    agent_ns_prior: u128,
}

impl Sender {
    /// A sender for `encoder`, starting at sequence number `seq`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        encoder: Box<dyn AudioEncoder>,
        codec: Codec,
        layout: Layout,
        ssrc: Ssrc,
        pt: PayloadType,
        te_pt: Option<PayloadType>,
        te_clock_rate: u32,
        seq: SeqNo,
        capacity: Duration,
    ) -> Result<Self, MediaError> {
        let dtmf = dtmf_sender(te_pt, te_clock_rate, &layout)?;
        let tones = ToneSender::new(layout.sample_rate)?;
        Ok(Self {
            pcm_pool: Spares::default(),
            pkt_pool: Spares::default(),
            encoder,
            ssrc,
            pt,
            te_pt,
            dtmf,
            tones,
            seq,
            // Both queues grow when used: a G.711 call never uses `queue`, and an agent that
            // queues little keeps its queue small and warm in the cache.
            queue: VecDeque::new(),
            law: Law::of(codec),
            encoded: VecDeque::new(),
            scratch: Vec::new(),
            capacity,
            capacity_samples: layout.samples_in(capacity),
            layout,
            last_agent: false,
            need_marker: true,
            sent_since_report: false,
            packets: 0,
            octets: 0,
            dtmf_packets: 0,
            encode_errors: 0,
            agent_samples: 0,
            agent_ns_prior: 0,
        })
    }

    /// Switches codec (re-INVITE): new encoder, payload types and frame layout. Queued agent
    /// audio is kept if the sample rate is unchanged (re-encoded from one G.711 law to the
    /// other when that changes), else dropped (it is at the wrong rate).
    pub fn reconfigure(
        &mut self,
        encoder: Box<dyn AudioEncoder>,
        codec: Codec,
        layout: Layout,
        pt: PayloadType,
        te_pt: Option<PayloadType>,
        te_clock_rate: u32,
    ) -> Result<(), MediaError> {
        let dtmf = dtmf_sender(te_pt, te_clock_rate, &layout)?;
        let law = Law::of(codec);
        // On a G.711 call the agent's audio is queued as bytes (see `push_audio`). Without
        // G.711 it becomes PCM again (at 8000 Hz: dropped below if the rate changes).
        if let (Some(from), None) = (self.law, law) {
            self.queue
                .extend(self.encoded.drain(..).map(|b| from.decode(b)));
        }
        if layout.sample_rate != self.layout.sample_rate {
            self.agent_ns_prior += u128::from(self.agent_samples) * 1_000_000_000
                / u128::from(self.layout.sample_rate);
            self.agent_samples = 0;
            self.queue.clear();
        }
        match (self.law, law) {
            // PCMU <-> PCMA: the queued audio is kept, in the new law.
            (Some(from), Some(to)) if from != to => {
                for b in self.encoded.iter_mut() {
                    *b = to.encode(from.decode(*b));
                }
            }
            // To G.711 from a PCM codec at 8000 Hz: the queue becomes bytes.
            (None, Some(to)) => {
                self.encoded
                    .extend(self.queue.drain(..).map(|s| to.encode(s)));
            }
            _ => {}
        }
        self.law = law;
        self.capacity_samples = layout.samples_in(self.capacity);
        self.encoder = encoder;
        self.layout = layout;
        self.pt = pt;
        self.te_pt = te_pt;
        self.dtmf = dtmf;
        if self.layout.sample_rate != self.tones.sample_rate() {
            // Tones still queued are dropped with the audio at the old rate.
            self.tones = ToneSender::new(layout.sample_rate)?;
        }
        self.need_marker = true;
        Ok(())
    }

    /// Sending stops (hold): events still queued are dropped; the next packet after resuming
    /// gets the marker bit. Queued agent audio is kept.
    pub fn pause(&mut self) {
        if let Some(d) = self.dtmf.as_mut() {
            d.clear();
        }
        self.tones = self.tones.cleared();
        self.need_marker = true;
        self.last_agent = false;
    }

    /// Appends agent audio, or refuses all of it if the queues would exceed their capacity.
    ///
    /// On a G.711 call the audio is encoded now, into the same byte queue as passthrough
    /// audio: G.711 has no encoder state, so the packets are the same as when encoding at the
    /// tick, the queue takes half the memory, and the two kinds of agent audio play in the
    /// order they were queued.
    pub fn push_audio(&mut self, pcm: &[i16]) -> Result<(), MediaError> {
        self.check_room(pcm.len())?;
        match self.law {
            Some(law) => {
                // Encoded into a Vec first: extending a VecDeque from a mapping iterator goes
                // sample by sample, from a slice it is a copy.
                self.scratch.clear();
                law.encode_into(pcm, &mut self.scratch);
                self.encoded.extend(&self.scratch);
            }
            None => self.queue.extend(pcm),
        }
        Ok(())
    }

    /// Appends already-encoded G.711 agent audio (one byte per sample), or refuses all of it
    /// if the codec is not G.711 or the queues would exceed their capacity.
    pub fn push_encoded(&mut self, codec: Codec, payload: &[u8]) -> Result<(), MediaError> {
        if self.law.is_none() {
            return Err(MediaError::PassthroughUnsupported(codec));
        }
        self.check_room(payload.len())?;
        self.encoded.extend(payload);
        Ok(())
    }

    /// Drops all queued agent audio, PCM and encoded.
    pub fn flush(&mut self) {
        self.queue.clear();
        self.encoded.clear();
    }

    /// How much agent audio is queued (PCM and encoded; encoded G.711 is one byte a sample).
    pub fn queued(&self) -> Duration {
        let n = u64::try_from(self.queued_samples()).unwrap_or(u64::MAX);
        Duration::from_nanos(n.saturating_mul(1_000_000_000) / u64::from(self.layout.sample_rate))
    }

    /// Queues a key press starting at `start` (a tick time).
    pub fn send_dtmf(
        &mut self,
        start: Instant,
        digit: Digit,
        duration: Duration,
    ) -> Result<(), MediaError> {
        let Some(d) = self.dtmf.as_mut() else {
            return Err(MediaError::DtmfNotNegotiated);
        };
        d.send(start, digit, duration)?;
        Ok(())
    }

    /// Queues an in-band key press (Q.23 tones in place of the agent's audio).
    pub fn send_dtmf_tone(&mut self, digit: Digit, duration: Duration) -> Result<(), MediaError> {
        self.tones.send(digit, duration)?;
        Ok(())
    }

    /// Exact milliseconds of agent audio sent.
    pub fn agent_ms(&self) -> u64 {
        let ns = self.agent_ns_prior
            + u128::from(self.agent_samples) * 1_000_000_000 / u128::from(self.layout.sample_rate);
        u64::try_from(ns / 1_000_000).unwrap_or(u64::MAX)
    }

    /// One frame tick at `at` (tick index `n` of `clock`): sends one packet to `to` (nothing if
    /// `None`: hold) and returns the PCM that went out (silence if none).
    pub fn tick(
        &mut self,
        at: Instant,
        n: u64,
        clock: &TickClock,
        to: Option<SocketAddr>,
        out: &mut VecDeque<MediaOutput>,
    ) -> Vec<i16> {
        let frame = self.layout.frame_samples;
        let mut pcm = self.pcm_pool.take().unwrap_or_default();
        pcm.clear();
        pcm.resize(frame, 0);
        let Some(to) = to else {
            return pcm;
        };

        let mut event_sent = false;
        if let (Some(dtmf), Some(te_pt)) = (self.dtmf.as_mut(), self.te_pt) {
            while let Some(p) = dtmf.poll(at) {
                let header = RtpHeader {
                    marker: p.marker,
                    payload_type: te_pt,
                    seq: self.seq,
                    timestamp: clock.ts_at(p.event_start).add(p.timestamp_offset),
                    ssrc: self.ssrc,
                };
                let mut packet = vec![0u8; RTP_HEADER_LEN + p.payload.len()];
                if header.write_packet(&p.payload, &mut packet).is_ok() {
                    self.seq = self.seq.next();
                    self.packets += 1;
                    self.dtmf_packets += 1;
                    self.octets += p.payload.len() as u64;
                    self.sent_since_report = true;
                    out.push_back(MediaOutput::Transmit {
                        to,
                        payload: packet,
                        rtcp: false,
                    });
                }
                event_sent = true;
            }
            if event_sent || !dtmf.is_idle() {
                // RFC 4733 §2.5.1.2: the events replace the audio while they play.
                self.need_marker = true;
                self.last_agent = false;
                return pcm;
            }
        }

        // In-band key presses replace the agent's audio while they play (it waits queued);
        // then encoded agent audio (G.711 passthrough), else PCM, else silence.
        let tones = self.tones.fill(&mut pcm);
        let passthrough = self.law.filter(|_| !tones && !self.encoded.is_empty());
        let taken = match passthrough {
            _ if tones => 0,
            Some(_) => self.encoded.len().min(frame),
            None => {
                let taken = self.queue.len().min(frame);
                let (a, b) = front(&self.queue, taken);
                if let Some((dst_a, rest)) = pcm.split_at_mut_checked(a.len())
                    && let Some(dst_b) = rest.get_mut(..b.len())
                {
                    dst_a.copy_from_slice(a);
                    dst_b.copy_from_slice(b);
                }
                self.queue.drain(..taken);
                taken
            }
        };
        let agent = taken > 0;
        let header = RtpHeader {
            marker: self.need_marker || (agent && !self.last_agent),
            payload_type: self.pt,
            seq: self.seq,
            timestamp: clock.ts_at_tick(n),
            ssrc: self.ssrc,
        };
        let mut packet = self
            .pkt_pool
            .take()
            .unwrap_or_else(|| Vec::with_capacity(RTP_HEADER_LEN + PAYLOAD_RESERVE));
        packet.clear();
        packet.resize(RTP_HEADER_LEN, 0);
        if header.write(&mut packet).is_err() {
            self.encode_errors += 1;
            return pcm;
        }
        if let Some(law) = passthrough {
            // The bytes go out as they are; the PCM reported is their decoding (the queue
            // holds at least `taken` bytes; a short tail is padded with silence).
            let (a, b) = front(&self.encoded, taken);
            packet.extend_from_slice(a);
            packet.extend_from_slice(b);
            self.encoded.drain(..taken);
            packet.resize(RTP_HEADER_LEN + frame, law.silence());
            law.decode_into(packet.get(RTP_HEADER_LEN..).unwrap_or_default(), &mut pcm);
        } else if self.encoder.encode(&pcm, &mut packet).is_err() {
            self.encode_errors += 1;
            return pcm;
        }
        self.seq = self.seq.next();
        self.packets += 1;
        self.octets += (packet.len() - RTP_HEADER_LEN) as u64;
        self.sent_since_report = true;
        self.need_marker = false;
        self.last_agent = agent;
        self.agent_samples += taken as u64;
        out.push_back(MediaOutput::Transmit {
            to,
            payload: packet,
            rtcp: false,
        });
        pcm
    }

    /// Takes back a sent-audio buffer from a `Frame` event for reuse.
    pub fn recycle_pcm(&mut self, v: Vec<i16>) {
        self.pcm_pool.put(v);
    }

    /// Takes back a transmitted packet's buffer for reuse.
    pub fn recycle_packet(&mut self, v: Vec<u8>) {
        self.pkt_pool.put(v);
    }

    /// Whether the last packet sent carried agent audio (a talkspurt is playing).
    pub fn talking(&self) -> bool {
        self.last_agent
    }

    /// Whether a key press is being sent or queued (events or tones).
    pub fn dtmf_busy(&self) -> bool {
        self.dtmf.as_ref().is_some_and(|d| !d.is_idle()) || !self.tones.is_idle()
    }

    /// Our SSRC.
    pub fn ssrc(&self) -> Ssrc {
        self.ssrc
    }

    /// Queued agent samples (PCM plus encoded bytes).
    fn queued_samples(&self) -> usize {
        self.queue.len().saturating_add(self.encoded.len())
    }

    /// `Err(Backpressure)` unless `extra` more samples fit in the queues.
    fn check_room(&self, extra: usize) -> Result<(), MediaError> {
        if self.queued_samples().saturating_add(extra) > self.capacity_samples {
            return Err(MediaError::Backpressure {
                queued: self.queued(),
                capacity: self.capacity,
            });
        }
        Ok(())
    }
}

/// The first `n` elements of `q` (at most all of them) as the ring's two slices, to copy
/// slice by slice rather than element by element.
fn front<T>(q: &VecDeque<T>, n: usize) -> (&[T], &[T]) {
    let (a, b) = q.as_slices();
    let from_a = a.len().min(n);
    let from_b = (n - from_a).min(b.len());
    (
        a.get(..from_a).unwrap_or_default(),
        b.get(..from_b).unwrap_or_default(),
    )
}

fn dtmf_sender(
    te_pt: Option<PayloadType>,
    clock_rate: u32,
    layout: &Layout,
) -> Result<Option<Rfc4733Sender>, MediaError> {
    let Some(_) = te_pt else {
        return Ok(None);
    };
    let sender = Rfc4733Sender::new(Rfc4733SenderConfig {
        clock_rate,
        ptime: layout.frame(),
        ..Rfc4733SenderConfig::default()
    })?;
    Ok(Some(sender))
}
