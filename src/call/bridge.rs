//! The bridge between one call's [`MediaStream`] and its AI backend, run by the call's media
//! worker at every frame tick (synchronous: it only uses `try_send`/`try_recv` on the
//! backend's bounded channels and never blocks the worker).
//!
//! * **Caller → backend.** Every frame the worker decodes goes to the backend as one
//!   [`BackendControl::Audio`] chunk: for PCMU/PCMA calls the RTP payload bytes exactly as
//!   received ([`MediaEvent::Frame::caller_encoded`](crate::media::stream::MediaEvent)), else
//!   the PCM16 frame at the stream's rate (the realtime client resamples it to 24 kHz). With
//!   the voice chain on ([`Voice`], [`crate::dsp::chain`]), the frame first goes through echo
//!   cancellation (against the frame sent in the same tick), noise suppression and the VAD,
//!   and a G.711 call's backend gets the processed audio re-encoded in the call's law.
//! * **Local decisions.** The chain's VAD decides barge-in ([`BargeIn::Local`] or
//!   [`BargeIn::Both`]) and, with local turn-taking, the end of the caller's turn
//!   ([`BackendControl::CommitTurn`]). They act after the tick that found them.
//! * **Backend → caller.** Audio chunks go to a local pending buffer; each tick moves just
//!   enough of it into the stream's outbound queue to keep [`FEED_AHEAD`] queued, so the media
//!   core paces it and a barge-in has little to drop. The backend usually sends a reply much
//!   faster than real time: the pending buffer holds it (up to [`MAX_PENDING`]).
//! * **Barge-in.** On the caller's speech (the server's [`BackendEvent::SpeechStarted`], or
//!   the local VAD's, per [`BargeIn`]) while the agent talks (a response in
//!   progress, or its audio still queued), the bridge flushes the stream and the pending
//!   buffer in the same tick and sends [`BackendControl::Interrupt`] with `played_ms`: how
//!   far the caller got through all the audio the backend delivered (what it delivered,
//!   less what was still pending or queued when the stream was flushed), so the backend can
//!   tell which of its replies was playing and how much of it was heard, even when it had
//!   started answering a new turn while an earlier reply still played.
//! * **Turn latency.** For each caller turn: when the caller's speech ended (the backend's
//!   `audio_end_ms` mapped back to the instant the frame holding it was handed to the
//!   backend), when the reply's first audio arrived from the backend, and when its first RTP
//!   packet went out (the inbound path, network arrival to handing over, is not in it).
//! * **Starting a reply.** The worker looks at the backend's events every 5 ms between
//!   frame ticks; when a reply starts while nothing is playing, its first packet leaves at
//!   once ([`MediaStream::send_ahead`]) instead of at the next tick.
//! * **Hang-up after goodbye.** [`Bridge::request_hangup`] waits until the goodbye has played
//!   out (asking the agent to say one first if its last response had no audio), then reports
//!   [`BridgeAction::HangUp`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::agent::backend::{AudioChunk, AudioFormat, BackendControl, BackendEvent, Role};
use crate::dsp::StageClock;
use crate::dsp::chain::{Chain, ChainConfig, ChainStats};
use crate::dsp::speech::SpeechEvent;
use crate::media::codec::g711::{alaw_encode, ulaw_encode};
use crate::media::stream::MediaStream;
use crate::records::{BackendSwitch, TurnLatency};

/// Agent audio kept in the stream's outbound queue ahead of the wire. Enough that a late tick
/// never starves playout, small enough that a barge-in drops little.
pub const FEED_AHEAD: Duration = Duration::from_millis(60);
/// Most agent audio held in the pending buffer (two minutes); more is dropped and counted.
pub const MAX_PENDING: Duration = Duration::from_secs(120);
/// Backend events handled per tick at most (the rest wait for the next tick).
pub const EVENTS_PER_TICK: usize = 256;
/// How long a hang-up waits for the goodbye to be said and played.
pub const GOODBYE_LIMIT: Duration = Duration::from_secs(15);
/// What the agent is asked to say when it hangs up without having said goodbye.
pub const GOODBYE_INSTRUCTIONS: &str = "Say a short, polite goodbye to the caller now.";
/// Input positions remembered to map the backend's `audio_end_ms` back to an instant (about
/// ten seconds of 20 ms frames).
const INPUT_MARKS: usize = 512;
/// Replies whose start is remembered for barge-in.
const REPLY_STARTS: usize = 16;

/// Who decides that the caller interrupts the agent (`[agent.dsp] barge_in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BargeIn {
    /// voxline's VAD, after echo cancellation (the server's VAD does not interrupt).
    Local,
    /// The backend's VAD (`input_audio_buffer.speech_started`).
    Server,
    /// Whichever hears the caller first.
    Both,
}

impl BargeIn {
    /// Parses `local`, `server` or `both`.
    pub fn parse(s: &str) -> Option<BargeIn> {
        Some(match s {
            "local" => BargeIn::Local,
            "server" => BargeIn::Server,
            "both" => BargeIn::Both,
            _ => return None,
        })
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BargeIn::Local => "local",
            BargeIn::Server => "server",
            BargeIn::Both => "both",
        }
    }

    fn local(self) -> bool {
        matches!(self, BargeIn::Local | BargeIn::Both)
    }

    fn server(self) -> bool {
        matches!(self, BargeIn::Server | BargeIn::Both)
    }
}

/// The voice chain of a realtime agent's calls and what it decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Voice {
    /// The stages (none: the caller's audio goes to the backend untouched).
    pub chain: ChainConfig,
    /// Who decides barge-in.
    pub barge_in: BargeIn,
    /// voxline ends the caller's turns (the server's turn detection is off).
    pub local_turns: bool,
}

impl Default for Voice {
    /// No chain, the server decides (the bridge as it was before the chain).
    fn default() -> Self {
        Voice {
            chain: ChainConfig {
                echo_cancellation: false,
                noise_suppression: None,
                speech: None,
            },
            barge_in: BargeIn::Server,
            local_turns: false,
        }
    }
}

/// What the bridge tells its call's agent task (transcripts, tool calls, turn figures).
#[derive(Debug)]
pub enum Notice {
    /// A finished utterance.
    Transcript {
        /// Who said it.
        role: Role,
        /// What was said.
        text: String,
        /// The backend's item id.
        item_id: Option<String>,
        /// It corrects the earlier utterance with this item id (a reply cut short).
        corrects: bool,
    },
    /// The agent wants a tool run.
    ToolCall {
        /// Echo this in the result.
        call_id: String,
        /// The tool.
        name: String,
        /// Its arguments.
        arguments: serde_json::Value,
    },
    /// A finished turn's latency figures.
    Turn(TurnLatency),
    /// The agent's next backend took over.
    Switched(BackendSwitch),
    /// Something worth a line in the transcript (barge-in, reconnection, backend errors).
    System(String),
}

/// What the worker should do after a bridge step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeAction {
    /// Nothing special.
    Continue,
    /// The agent hung up and its goodbye has played: end the call.
    HangUp,
    /// The backend is gone (closed, or a fatal error): fall back.
    BackendLost(String),
}

/// Counters of one bridge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Caller frames sent to the backend.
    pub frames_up: u64,
    /// Caller frames dropped because the backend's control queue was full.
    pub frames_dropped: u64,
    /// Agent audio chunks received.
    pub chunks_down: u64,
    /// Agent audio bytes dropped (pending buffer full, or a format the call cannot play).
    pub bytes_dropped: u64,
    /// Barge-ins handled.
    pub barge_ins: u64,
    /// Of those, decided by the local VAD.
    pub local_barge_ins: u64,
    /// Turns ended by the local VAD (local turn-taking).
    pub local_turns: u64,
}

/// One call's bridge to its backend.
#[derive(Debug)]
pub struct Bridge {
    control: mpsc::Sender<BackendControl>,
    events: mpsc::Receiver<BackendEvent>,
    format: AudioFormat,
    notices: mpsc::Sender<Notice>,
    /// The instant turn figures count from (the call's answer, near enough: media start).
    origin: Instant,
    pending: VecDeque<u8>,
    /// Where the last responses' audio started in `delivered` (newest last), to tell how
    /// much of the reply being heard was heard.
    reply_starts: VecDeque<u64>,
    /// Agent audio the backend delivered (bytes of the call's format), counted since the
    /// backend started; `delivered_origin` is where the backend in use (after a switch)
    /// started.
    delivered: u64,
    delivered_origin: u64,
    responding: bool,
    response_had_audio: bool,
    input_ms: u64,
    input_marks: VecDeque<(u64, Instant)>,
    turn: Option<Turn>,
    goodbye: Goodbye,
    lost: bool,
    scratch: Vec<i16>,
    stats: BridgeStats,
    /// The voice chain (`None`: off, or the call's audio does not suit it).
    chain: Option<Chain>,
    barge_in: BargeIn,
    local_turns: bool,
    /// The chain's output frame.
    voice: Vec<i16>,
    /// Speech events of the last frames, acted on after the tick.
    speech: VecDeque<SpeechEvent>,
}

#[derive(Debug, Clone, Copy)]
struct Turn {
    speech_end: Instant,
    first_audio: Option<Instant>,
    /// The sent-counter value the reply's first audio starts at.
    audio_mark: u64,
    /// A cascaded backend's stage figures: STT, LLM first token, TTS first byte (ms).
    stages: [Option<u64>; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goodbye {
    None,
    /// Asked the agent to say goodbye; waiting for that response to start.
    Asked {
        deadline: Instant,
        started: bool,
    },
    /// Waiting for the response to finish and its audio to play out.
    Draining {
        deadline: Instant,
    },
    Done,
}

impl Bridge {
    /// A bridge for a backend speaking `format` (the call's [`AudioFormat`]); `origin` is the
    /// instant turn figures count from. `voice` says which stages of the voice chain run on
    /// the call's frames (`rate`, `frame_samples`); if the call's audio does not suit the
    /// chain it runs without it, and barge-in and turns fall back to the server.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        control: mpsc::Sender<BackendControl>,
        events: mpsc::Receiver<BackendEvent>,
        format: AudioFormat,
        notices: mpsc::Sender<Notice>,
        origin: Instant,
        voice: &Voice,
        rate: u32,
        frame_samples: usize,
    ) -> Bridge {
        let chain = if voice.chain.any() {
            match Chain::new(&voice.chain, rate, frame_samples) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "the voice chain cannot run on this call: the caller's audio goes to the backend untouched");
                    None
                }
            }
        } else {
            None
        };
        let local = chain.as_ref().is_some_and(|_| voice.chain.speech.is_some());
        Bridge {
            barge_in: if local {
                voice.barge_in
            } else {
                BargeIn::Server
            },
            local_turns: local && voice.local_turns,
            chain,
            voice: Vec::new(),
            speech: VecDeque::new(),
            control,
            events,
            format,
            notices,
            origin,
            pending: VecDeque::new(),
            reply_starts: VecDeque::new(),
            delivered: 0,
            delivered_origin: 0,
            responding: false,
            response_had_audio: false,
            input_ms: 0,
            input_marks: VecDeque::with_capacity(INPUT_MARKS),
            turn: None,
            goodbye: Goodbye::None,
            lost: false,
            scratch: Vec::new(),
            stats: BridgeStats::default(),
        }
    }

    /// The counters.
    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// Whether the backend is gone.
    pub fn is_lost(&self) -> bool {
        self.lost
    }

    /// Handles the backend's events that arrived, then tops up the stream's outbound queue.
    /// Call it before [`MediaStream::handle_timeout`] so new audio goes out this tick.
    pub fn pump(&mut self, stream: &mut MediaStream, now: Instant) -> BridgeAction {
        let mut action = BridgeAction::Continue;
        for _ in 0..EVENTS_PER_TICK {
            let ev = match self.events.try_recv() {
                Ok(ev) => ev,
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    if !self.lost {
                        self.lost = true;
                        action = BridgeAction::BackendLost("the backend stopped".into());
                    }
                    break;
                }
            };
            if let Some(a) = self.on_event(stream, now, ev) {
                action = a;
            }
        }
        self.feed(stream, now);
        action
    }

    /// The voice chain's counters, if it runs.
    pub fn chain_stats(&self) -> Option<ChainStats> {
        self.chain.as_ref().map(Chain::stats)
    }

    /// One caller frame: runs the voice chain on it (with `sent`, what went out in the same
    /// tick, as the echo reference; `clock` times the stages) and sends it to the backend
    /// (nothing while the call is on hold: the model should not answer hold music).
    /// `encoded` is the frame's G.711 bytes, if any (used as they are without the chain).
    pub fn on_frame(
        &mut self,
        now: Instant,
        caller: &[i16],
        sent: &[i16],
        encoded: Option<&[u8]>,
        live: bool,
        clock: &dyn StageClock,
    ) {
        if !live || self.lost {
            return;
        }
        let data = if let Some(chain) = self.chain.as_mut() {
            self.voice.clear();
            self.voice.extend_from_slice(caller);
            let out = chain.process(now, sent, &mut self.voice, clock);
            if let Some(ev) = out.event {
                self.speech.push_back(ev);
            }
            match self.format {
                AudioFormat::Pcmu8k => self.voice.iter().map(|s| ulaw_encode(*s)).collect(),
                AudioFormat::Pcma8k => self.voice.iter().map(|s| alaw_encode(*s)).collect(),
                AudioFormat::Pcm16 { .. } => {
                    let mut v = Vec::with_capacity(self.voice.len() * 2);
                    for s in &self.voice {
                        v.extend_from_slice(&s.to_le_bytes());
                    }
                    Bytes::from(v)
                }
            }
        } else {
            match self.passthrough(caller, encoded) {
                Some(d) => d,
                None => return,
            }
        };
        self.send_up(now, data);
    }

    /// The caller's frame as the backend takes it, without the chain.
    fn passthrough(&self, caller: &[i16], encoded: Option<&[u8]>) -> Option<Bytes> {
        Some(match (self.format, encoded) {
            (AudioFormat::Pcmu8k | AudioFormat::Pcma8k, Some(bytes)) => {
                Bytes::copy_from_slice(bytes)
            }
            (AudioFormat::Pcm16 { .. }, _) => {
                let mut v = Vec::with_capacity(caller.len() * 2);
                for s in caller {
                    v.extend_from_slice(&s.to_le_bytes());
                }
                Bytes::from(v)
            }
            // A G.711 backend on a call that no longer carries G.711 bytes (a codec change):
            // nothing sensible to send.
            _ => return None,
        })
    }

    fn send_up(&mut self, now: Instant, data: Bytes) {
        let ms = self.format.duration_ms(data.len() as u64);
        let chunk = AudioChunk {
            format: self.format,
            data,
        };
        match self.control.try_send(BackendControl::Audio(chunk)) {
            Ok(()) => {
                self.stats.frames_up += 1;
                if self.input_marks.len() == INPUT_MARKS {
                    self.input_marks.pop_front();
                }
                self.input_marks.push_back((self.input_ms, now));
                self.input_ms += ms;
            }
            Err(_) => self.stats.frames_dropped += 1,
        }
    }

    /// After the tick: acts on the local VAD's decisions (barge-in, end of turn), notes the
    /// first RTP packet of a reply, and ends a hang-up whose goodbye has played.
    pub fn after_tick(&mut self, stream: &mut MediaStream, now: Instant) -> BridgeAction {
        while let Some(ev) = self.speech.pop_front() {
            match ev {
                SpeechEvent::Started { .. } => {
                    if self.barge_in.local() || self.local_turns {
                        self.caller_started(stream, self.barge_in.local(), true);
                    }
                }
                SpeechEvent::Ended { last_voiced } if self.local_turns && !self.lost => {
                    self.finish_turn(None);
                    if self.control.try_send(BackendControl::CommitTurn).is_err() {
                        tracing::warn!("end of turn: the backend's queue is full, commit not sent");
                    } else {
                        self.stats.local_turns += 1;
                        super::metrics::Metrics::inc(
                            &super::metrics::Metrics::global().local_turns,
                        );
                        self.turn = Some(Turn {
                            speech_end: last_voiced,
                            first_audio: None,
                            audio_mark: 0,
                            stages: [None; 3],
                        });
                    }
                }
                SpeechEvent::Ended { .. } => {}
            }
        }
        if let Some(t) = self.turn
            && t.first_audio.is_some()
            && stream.agent_ms_sent() > t.audio_mark
        {
            self.finish_turn(Some(now));
        }
        let idle = !self.responding && self.pending.is_empty() && stream.queued_audio().is_zero();
        match self.goodbye {
            Goodbye::Asked { deadline, .. } | Goodbye::Draining { deadline } if now >= deadline => {
                tracing::info!("goodbye not finished in time: hanging up anyway");
                self.goodbye = Goodbye::Done;
                BridgeAction::HangUp
            }
            Goodbye::Draining { .. } if idle => {
                self.goodbye = Goodbye::Done;
                BridgeAction::HangUp
            }
            Goodbye::Asked { .. } | Goodbye::Draining { .. } if self.lost && idle => {
                self.goodbye = Goodbye::Done;
                BridgeAction::HangUp
            }
            _ => BridgeAction::Continue,
        }
    }

    /// The agent asked to hang up: let the goodbye play (asking for one if the last response
    /// said nothing), then [`Bridge::after_tick`] reports [`BridgeAction::HangUp`].
    pub fn request_hangup(&mut self, now: Instant) {
        if self.goodbye != Goodbye::None {
            return;
        }
        let deadline = now + GOODBYE_LIMIT;
        if self.response_had_audio || !self.pending.is_empty() || self.lost {
            self.goodbye = Goodbye::Draining { deadline };
        } else {
            let say = BackendControl::Say {
                instructions: GOODBYE_INSTRUCTIONS.to_owned(),
            };
            if self.control.try_send(say).is_err() {
                self.goodbye = Goodbye::Draining { deadline };
            } else {
                self.goodbye = Goodbye::Asked {
                    deadline,
                    started: false,
                };
            }
        }
    }

    /// The call is over: reports the turn in progress. The session itself ends when the last
    /// sender of its control channel is gone (this bridge, and the agent task once the tool
    /// results still in flight are sent: a transfer's outcome reaches the model even though
    /// the call ended with it).
    pub fn close(&mut self) {
        self.finish_turn(None);
    }

    fn on_event(
        &mut self,
        stream: &mut MediaStream,
        now: Instant,
        ev: BackendEvent,
    ) -> Option<BridgeAction> {
        match ev {
            BackendEvent::Audio(chunk) => self.on_audio(stream, now, chunk),
            BackendEvent::ResponseStarted => {
                self.responding = true;
                self.response_had_audio = false;
                if let Goodbye::Asked { deadline, .. } = self.goodbye {
                    self.goodbye = Goodbye::Asked {
                        deadline,
                        started: true,
                    };
                }
            }
            BackendEvent::ResponseDone => {
                self.responding = false;
                if let Goodbye::Asked {
                    deadline,
                    started: true,
                } = self.goodbye
                {
                    self.goodbye = Goodbye::Draining { deadline };
                }
            }
            BackendEvent::SpeechStarted { .. } => {
                self.caller_started(stream, self.barge_in.server(), false)
            }
            BackendEvent::SpeechStopped { audio_end_ms } => {
                self.finish_turn(None);
                let speech_end = self.input_instant(audio_end_ms).unwrap_or(now);
                self.turn = Some(Turn {
                    speech_end,
                    first_audio: None,
                    audio_mark: 0,
                    stages: [None; 3],
                });
            }
            BackendEvent::TranscriptDelta { .. } => {}
            BackendEvent::StageLatency {
                stt_final_ms,
                llm_first_token_ms,
                tts_first_byte_ms,
            } => {
                if let Some(t) = &mut self.turn {
                    t.stages = [stt_final_ms, llm_first_token_ms, tts_first_byte_ms];
                }
            }
            BackendEvent::TranscriptFinal {
                role,
                text,
                item_id,
            } => self.notice(Notice::Transcript {
                role,
                text,
                item_id: Some(item_id),
                corrects: false,
            }),
            BackendEvent::TranscriptCorrected {
                role,
                text,
                item_id,
            } => self.notice(Notice::Transcript {
                role,
                text,
                item_id: Some(item_id),
                corrects: true,
            }),
            BackendEvent::ToolCall {
                call_id,
                name,
                arguments,
            } => self.notice(Notice::ToolCall {
                call_id,
                name,
                arguments,
            }),
            BackendEvent::Switched { from, to, reason } => {
                // The new backend counts its input audio from zero.
                self.input_ms = 0;
                self.input_marks.clear();
                self.responding = false;
                // So does its output audio.
                self.delivered_origin = self.delivered;
                super::metrics::Metrics::inc(&super::metrics::Metrics::global().backend_switches);
                let at_ms = now.saturating_duration_since(self.origin).as_millis() as u64;
                self.notice(Notice::Switched(BackendSwitch {
                    at_ms,
                    from,
                    to,
                    reason,
                }));
            }
            BackendEvent::Reconnected => {
                // The new session counts its input audio from zero.
                self.input_ms = 0;
                self.input_marks.clear();
                self.notice(Notice::System("backend reconnected".into()));
            }
            BackendEvent::Error { message, fatal } => {
                tracing::warn!(%message, fatal, "backend error");
                self.notice(Notice::System(format!("backend error: {message}")));
                if fatal && !self.lost {
                    self.lost = true;
                    return Some(BridgeAction::BackendLost(message));
                }
            }
            BackendEvent::Closed => {
                if !self.lost {
                    self.lost = true;
                    return Some(BridgeAction::BackendLost("the backend closed".into()));
                }
            }
        }
        None
    }

    fn on_audio(&mut self, stream: &MediaStream, now: Instant, chunk: AudioChunk) {
        self.stats.chunks_down += 1;
        if chunk.format != self.format {
            self.stats.bytes_dropped += chunk.data.len() as u64;
            return;
        }

        // Audio dropped below counts as delivered (and skipped at once): the positions stay
        // those of the backend.
        let at = self.delivered;
        self.delivered += chunk.data.len() as u64;
        let max = usize::try_from(
            u64::from(self.format.sample_rate())
                * u64::from(self.format.bytes_per_sample())
                * MAX_PENDING.as_secs(),
        )
        .unwrap_or(usize::MAX);
        if self.pending.len() + chunk.data.len() > max {
            self.stats.bytes_dropped += chunk.data.len() as u64;
            return;
        }
        let mark = self.position(stream);
        if let Some(t) = &mut self.turn
            && t.first_audio.is_none()
        {
            t.first_audio = Some(now);
            t.audio_mark = mark;
        }
        if !self.response_had_audio {
            if self.reply_starts.len() == REPLY_STARTS {
                self.reply_starts.pop_front();
            }
            self.reply_starts.push_back(at);
        }
        self.response_had_audio = true;
        self.pending.extend(chunk.data.iter().copied());
    }

    /// The caller started talking (heard by the server's VAD, or by the local one when
    /// `local`): the turn waiting for a reply ends without it, and if `barge_in` and the
    /// agent is talking, it stops.
    fn caller_started(&mut self, stream: &mut MediaStream, barge_in: bool, local: bool) {
        let queued = !stream.queued_audio().is_zero() || !self.pending.is_empty();
        // With local turns only the local VAD delimits turns.
        if self.turn.is_some() && local == self.local_turns {
            // The caller spoke again before the reply played: the turn ends without it.
            self.finish_turn(None);
        }
        if !barge_in || !(self.responding || queued) {
            return;
        }
        let unplayed = stream.queued_audio().as_millis() as u64 + self.pending_ms();
        let played = self
            .format
            .duration_ms(self.delivered)
            .saturating_sub(unplayed);
        let origin = self.format.duration_ms(self.delivered_origin);
        let played_ms = played.saturating_sub(origin);
        // The reply being heard: the last one whose audio started before the caller's position.
        let start = self
            .reply_starts
            .iter()
            .map(|b| self.format.duration_ms(*b))
            .rfind(|b| *b <= played)
            .unwrap_or(origin);
        let heard_ms = played.saturating_sub(start);
        stream.flush();
        self.pending.clear();
        self.stats.barge_ins += 1;
        let m = super::metrics::Metrics::global();
        super::metrics::Metrics::inc(&m.barge_ins);
        if local {
            self.stats.local_barge_ins += 1;
            super::metrics::Metrics::inc(&m.local_barge_ins);
        }
        tracing::debug!(heard_ms, played_ms, local, "barge-in");
        if self
            .control
            .try_send(BackendControl::Interrupt { played_ms })
            .is_err()
        {
            tracing::warn!("barge-in: the backend's queue is full, interrupt not sent");
        }
        self.notice(Notice::System(format!(
            "barge-in: the caller interrupted after {heard_ms} ms of the reply"
        )));
    }

    /// Moves pending agent audio into the stream until [`FEED_AHEAD`] is queued beyond what
    /// the ticks due at `now` will play.
    fn feed(&mut self, stream: &mut MediaStream, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        // Besides the margin, what the ticks due now will play: after a late wake-up the
        // stream catches up several ticks at once, and each must find its audio queued.
        let ahead = FEED_AHEAD + stream.due_audio(now);
        let bps = usize::try_from(self.format.bytes_per_sample()).unwrap_or(1);
        let frame_bytes = stream.frame_samples() * bps;
        while !self.pending.is_empty() && stream.queued_audio() < ahead {
            let mut take = self.pending.len().min(frame_bytes);
            take -= take % bps;
            if take == 0 {
                // A lone trailing byte of PCM16 cannot be played.
                self.stats.bytes_dropped += self.pending.len() as u64;
                self.pending.clear();
                return;
            }
            let result = match self.format {
                AudioFormat::Pcmu8k | AudioFormat::Pcma8k => {
                    let (a, b) = self.pending.as_slices();
                    if a.len() >= take {
                        stream.send_encoded(&a[..take])
                    } else {
                        let mut v: Vec<u8> = Vec::with_capacity(take);
                        v.extend_from_slice(a);
                        v.extend_from_slice(&b[..take - a.len()]);
                        stream.send_encoded(&v)
                    }
                }
                AudioFormat::Pcm16 { .. } => {
                    self.scratch.clear();
                    let mut it = self.pending.iter().take(take);
                    while let (Some(lo), Some(hi)) = (it.next(), it.next()) {
                        self.scratch.push(i16::from_le_bytes([*lo, *hi]));
                    }
                    stream.send_audio(&self.scratch)
                }
            };
            match result {
                Ok(()) => {
                    self.pending.drain(..take);
                }
                Err(crate::media::stream::MediaError::Backpressure { .. }) => return,
                Err(e) => {
                    // The call's codec cannot carry this audio (a mid-call codec change).
                    tracing::warn!(error = %e, "agent audio cannot be played on this call");
                    self.stats.bytes_dropped += self.pending.len() as u64;
                    self.pending.clear();
                    return;
                }
            }
        }
    }

    /// The sent-counter position the next audio from the backend will start at.
    fn position(&self, stream: &MediaStream) -> u64 {
        stream.agent_ms_sent() + stream.queued_audio().as_millis() as u64 + self.pending_ms()
    }

    fn pending_ms(&self) -> u64 {
        self.format.duration_ms(self.pending.len() as u64)
    }

    /// When the input audio ending at `pos_ms` had been sent to the backend: the instant the
    /// frame holding its last millisecond was handed over (a frame goes over whole).
    fn input_instant(&self, pos_ms: u64) -> Option<Instant> {
        let idx = self.input_marks.partition_point(|(p, _)| *p < pos_ms);
        let (_, t) = match idx {
            0 => *self.input_marks.front()?,
            i => *self.input_marks.get(i - 1)?,
        };
        Some(t)
    }

    fn finish_turn(&mut self, first_rtp: Option<Instant>) {
        let Some(t) = self.turn.take() else {
            return;
        };
        let ms = |i: Instant| i.saturating_duration_since(self.origin).as_millis() as u64;
        let turn = TurnLatency {
            caller_speech_end_ms: ms(t.speech_end),
            first_backend_audio_ms: t.first_audio.map(ms),
            first_rtp_out_ms: first_rtp.map(ms),
            stt_final_ms: t.stages[0],
            llm_first_token_ms: t.stages[1],
            tts_first_byte_ms: t.stages[2],
        };
        if let Some(r) = turn.response_latency_ms() {
            tracing::debug!(
                response_ms = r,
                backend_ms = turn.backend_latency_ms(),
                "turn latency"
            );
        }
        self.notice(Notice::Turn(turn));
    }

    fn notice(&self, n: Notice) {
        if self.notices.try_send(n).is_err() {
            tracing::warn!("agent task queue full: a transcript line or tool call was dropped");
        }
    }
}
