//! A call's part in its media ([`MediaCall`]): the agent that answers the caller, a realtime
//! call's bridge to its AI backend and its fallback, and the call table's media fields. The
//! media workers in [`crate::runtime::media`] own the sockets, the clock and the stream, and
//! call into this part at each service.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::agent::{AgentTaskSpec, CallParties, Fallback, NOTICE_QUEUE};
use super::bridge::{Bridge, BridgeAction};
use super::control::{CallMediaLink, MediaControl};
use super::table::dsp_info;
use super::{AgentKind, CallCommand, CallTable};
use crate::agent::backend::{AudioFormat, BackendHandle};
use crate::agent::{AgentAction, Echo, FrameFormat, LocalAgent, Play};
use crate::dsp::chain::ChainStats;
use crate::media::stream::{MediaEvent, MediaStats, MediaStream};
use crate::records::DspInfo;
use crate::runtime::Commands;
use crate::runtime::media::{
    MediaCall, MediaHandle, MediaPool, MediaStart, Prepared, StartError, StreamInfo, TickFrame,
};
use crate::sip::CallHandle;

/// The media workers as the call layer uses them.
pub type CallMediaPool = MediaPool<CallMedia>;
/// A call's media as the call manager holds it (dropping it ends the media).
pub type CallMediaHandle = MediaHandle<CallMedia>;

/// A realtime call's backend, connected before the media starts.
#[derive(Debug)]
pub struct BackendSetup {
    /// The backend's channels.
    pub handle: BackendHandle,
    /// The audio format agreed with it.
    pub format: AudioFormat,
    /// Who is on the call.
    pub parties: CallParties,
    /// Where the transcript goes.
    pub transcript: Option<PathBuf>,
    /// The caller memory (agents with `memory`).
    pub memory: Option<super::postcall::CallerMemory>,
    /// The records, for the post-call analysis.
    pub records: Option<crate::records::RecordWriter>,
    /// PII redaction of the transcript and the analysis.
    pub redactor: std::sync::Arc<crate::records::redact::Redactor>,
}

/// What the call layer's part of a call's media is made from.
pub struct CallPartSpec {
    /// The agent that answers the audio.
    pub agent: AgentKind,
    /// The shared call table.
    pub table: CallTable,
    /// The driver's command channel, to report back.
    pub commands: Commands<CallCommand>,
    /// A realtime agent's backend; `None` with a realtime agent means the backend could not
    /// be reached and the agent's fallback prompt plays from the start.
    pub backend: Option<BackendSetup>,
}

/// Starts a call's media on `pool`: the stream and sockets go to a worker; this call's part
/// (its agent, a realtime call's agent task and bridge) is built off the worker meanwhile.
pub fn spawn(
    pool: &CallMediaPool,
    start: MediaStart,
    part: CallPartSpec,
) -> Result<CallMediaHandle, StartError> {
    let call = start.call;
    let CallPartSpec {
        agent,
        table,
        commands,
        backend,
    } = part;
    pool.start(start, move |info, link| {
        prepare(call, agent, table, commands, backend, info, link)
    })
}

/// Builds a call's part (a play agent reads and resamples its file, off the runtime).
async fn prepare(
    call: CallHandle,
    agent: AgentKind,
    table: CallTable,
    commands: Commands<CallCommand>,
    backend: Option<BackendSetup>,
    info: StreamInfo,
    link: CallMediaLink,
) -> Prepared<CallMedia> {
    let realtime = match &agent {
        AgentKind::Ai(r) => Some(r.clone()),
        _ => None,
    };
    let (agent, fallback_play) = match build_agent(agent, info.sample_rate, info.frame).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(%call, error = %e, "the agent cannot start: hanging up");
            let _ = commands.try_send(CallCommand::MediaHangup { call, reason: e });
            (Box::new(Silent) as Box<dyn LocalAgent>, None)
        }
    };
    let origin = info.origin;
    let bridge = match (&realtime, backend) {
        (Some(ra), Some(setup)) => {
            let (ntx, nrx) = mpsc::channel(NOTICE_QUEUE);
            let control = setup.handle.control.clone();
            tokio::spawn(super::agent::run_agent_task(AgentTaskSpec {
                call,
                agent: ra.clone(),
                parties: setup.parties,
                control: control.clone(),
                notices: nrx,
                media: link,
                commands: commands.clone(),
                table: table.clone(),
                transcript: setup.transcript.clone(),
                origin,
                memory: setup.memory,
                records: setup.records,
                redactor: setup.redactor,
            }));
            if let Some(path) = &setup.transcript {
                table.update(call, |i| i.transcript = Some(path.display().to_string()));
            }
            let frame_samples =
                (u128::from(info.sample_rate) * info.frame.as_micros() / 1_000_000) as usize;
            let bridge = Bridge::new(
                control,
                setup.handle.events,
                setup.format,
                ntx,
                origin,
                &ra.voice,
                info.sample_rate,
                frame_samples,
            );
            if ra.voice.chain.any() {
                tracing::debug!(%call, chain = %ra.voice.chain.describe(), barge_in = ra.voice.barge_in.as_str(), local_turns = ra.voice.local_turns, running = bridge.chain_stats().is_some(), "voice chain");
            }
            Some(bridge)
        }
        _ => None,
    };
    // Only a realtime backend without the voice chain uses the caller's G.711 bytes
    // (passthrough); the chain re-encodes what it processed.
    let caller_encoded = bridge.as_ref().is_some_and(|b| b.chain_stats().is_none());
    let part = CallMedia {
        call,
        agent,
        table,
        commands,
        bridge,
        dsp_reported: ChainStats::default(),
        fallback: realtime.map(|ra| FallbackState {
            play: fallback_play,
            transfer_to: match &ra.fallback {
                Fallback::Prompt { transfer_to, .. } => transfer_to.clone(),
                Fallback::Reject { .. } => None,
            },
            active: false,
        }),
        hung_up: false,
    };
    Prepared {
        call: part,
        caller_encoded,
    }
}

/// A call's part in its media.
pub struct CallMedia {
    call: CallHandle,
    agent: Box<dyn LocalAgent>,
    table: CallTable,
    commands: Commands<CallCommand>,
    /// A realtime agent's bridge to its backend.
    bridge: Option<Bridge>,
    /// The voice chain's counters last added to the metrics.
    dsp_reported: ChainStats,
    /// A realtime agent's fallback (what plays when the backend is gone).
    fallback: Option<FallbackState>,
    hung_up: bool,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl MediaCall for CallMedia {
    type Control = MediaControl;

    fn wants_pump(&self) -> bool {
        self.bridge.as_ref().is_some_and(|b| !b.is_lost())
    }

    fn pump(&mut self, stream: &mut MediaStream, now: Instant) {
        if let Some(b) = self.bridge.as_mut() {
            let action = b.pump(stream, now);
            bridge_action(self, stream, action);
        }
    }

    fn tick(&mut self, stream: &mut MediaStream, out: &mut Vec<i16>, now: Instant) -> bool {
        // The local agent answers the caller's frame before that tick's packet leaves
        // (same-tick reply, `call::tick`).
        let Some(t) = super::tick::run_tick(stream, self.agent.as_mut(), out, now) else {
            return false;
        };
        if t.dropped {
            tracing::trace!(call = %self.call, "agent audio dropped: outbound queue full");
        }
        if t.action == AgentAction::HangUp {
            self.agent_hung_up();
        }
        true
    }

    fn after_ticks(&mut self, stream: &mut MediaStream, now: Instant) {
        if let Some(b) = self.bridge.as_mut() {
            let action = b.after_tick(stream, now);
            bridge_action(self, stream, action);
        }
        // A realtime call whose backend never connected plays its fallback from the start.
        if self.bridge.is_none() && self.fallback.as_ref().is_some_and(|f| !f.active) {
            activate_fallback(self, stream, "the backend could not be reached");
        }
    }

    fn on_frame(&mut self, f: TickFrame<'_>) {
        // On hold the agent pauses with the media: otherwise it would answer the hold music,
        // and what it says would pile up in the outbound queue and play, late, after the
        // resume (an echo would then lag by the length of the hold).
        if let Some(b) = self.bridge.as_mut() {
            b.on_frame(f.now, f.caller, f.sent, f.encoded, f.sending, f.clock);
        }
    }

    fn on_event(&mut self, _stream: &mut MediaStream, ev: MediaEvent, _now: Instant) {
        let call = self.call;
        match ev {
            MediaEvent::Dtmf(d) => {
                tracing::info!(%call, digit = %d.digit, method = ?d.method, duration_ms = d.duration_ms, "DTMF");
                self.agent.on_dtmf(d.digit.as_char());
                self.table
                    .update(call, |i| i.dtmf.push(d.digit.to_string()));
            }
            MediaEvent::Latched { addr } => tracing::debug!(%call, %addr, "RTP source latched"),
            MediaEvent::SsrcChanged { ssrc } => {
                tracing::info!(%call, ssrc = ssrc.0, "RTP SSRC changed")
            }
            MediaEvent::RtpTimeout { silent_for } => {
                tracing::warn!(
                    %call,
                    silent_s = silent_for.as_secs(),
                    "no RTP from the peer: hanging up. Likely a NAT or firewall drops the media \
                     (check [sip] external_ip, the RTP port range in the firewall, and the peer's NAT settings)"
                );
                hang_up(self, "RTP timeout");
            }
            MediaEvent::RemoteBye => tracing::debug!(%call, "RTCP BYE from the peer"),
            // Frames are handed to `on_frame` by the worker.
            MediaEvent::Frame { .. } => {}
        }
    }

    fn control(&mut self, stream: &mut MediaStream, ctl: MediaControl, now: Instant) {
        let call = self.call;
        match ctl {
            MediaControl::Update(n) => {
                if let Err(e) = stream.update(now, n) {
                    tracing::warn!(%call, error = %e, "media update failed");
                }
            }
            MediaControl::InfoDtmf { content_type, body } => {
                stream.handle_info_dtmf(now, &content_type, &body)
            }
            MediaControl::SendDtmf {
                digits,
                duration,
                inband,
            } => {
                for d in digits {
                    let sent = if inband {
                        stream.send_dtmf_tone(d, duration)
                    } else {
                        stream.send_dtmf(now, d, duration)
                    };
                    if let Err(e) = sent {
                        tracing::warn!(%call, error = %e, "cannot send DTMF");
                    }
                }
            }
            MediaControl::AgentHangup => match self.bridge.as_mut() {
                Some(b) => b.request_hangup(now),
                None => hang_up(self, "agent hung up"),
            },
        }
    }

    fn stats(&mut self, stats: MediaStats) {
        let dsp = self.dsp_report();
        let barge_ins = self.barge_ins();
        self.table.update(self.call, |i| {
            i.media = Some(stats);
            if dsp.is_some() {
                i.dsp = dsp;
            }
            i.barge_ins = barge_ins;
        });
    }

    fn failed(&mut self, reason: &'static str) {
        hang_up(self, reason);
    }

    fn recording(&mut self, path: &Path) {
        self.table.update(self.call, |i| {
            i.recording = Some(path.display().to_string())
        });
    }

    fn close(&mut self, _now: Instant) {
        let dsp = self.dsp_report();
        let barge_ins = self.barge_ins();
        self.table.update(self.call, |i| {
            if dsp.is_some() {
                i.dsp = dsp;
            }
            i.barge_ins = barge_ins;
        });
        if let Some(b) = self.bridge.as_mut() {
            b.close();
            let s = b.stats();
            tracing::debug!(call = %self.call, up = s.frames_up, up_dropped = s.frames_dropped, down = s.chunks_down, dropped_bytes = s.bytes_dropped, barge_ins = s.barge_ins, "backend bridge closed");
        }
    }
}

impl CallMedia {
    /// The bridge's barge-ins so far (0 without a backend).
    fn barge_ins(&self) -> u32 {
        self.bridge.as_ref().map_or(0, |b| {
            u32::try_from(b.stats().barge_ins).unwrap_or(u32::MAX)
        })
    }

    /// The voice chain's figures for the call table, adding the work since the last report
    /// to the process's metrics.
    fn dsp_report(&mut self) -> Option<DspInfo> {
        let b = self.bridge.as_ref()?;
        let now = b.chain_stats()?;
        super::metrics::Metrics::global().dsp(&self.dsp_reported, &now);
        self.dsp_reported = now;
        Some(dsp_info(&now, &b.stats()))
    }

    /// The local agent said it is done: hang up, or transfer where a realtime call's fallback
    /// says to.
    fn agent_hung_up(&mut self) {
        if self.hung_up {
            return;
        }
        self.hung_up = true;
        let transfer = self
            .fallback
            .as_ref()
            .filter(|f| f.active)
            .and_then(|f| f.transfer_to.clone());
        match transfer {
            Some(target) => fallback_transfer(self, target),
            None => {
                let _ = self.commands.try_send(CallCommand::MediaHangup {
                    call: self.call,
                    reason: "agent finished".into(),
                });
            }
        }
    }
}

/// What a realtime call falls back to when its backend is gone.
struct FallbackState {
    /// The prompt, loaded when the call started (`None`: no prompt, hang up).
    play: Option<Box<dyn LocalAgent>>,
    /// Transfer here after the prompt.
    transfer_to: Option<String>,
    /// Whether the fallback runs.
    active: bool,
}

fn bridge_action(c: &mut CallMedia, stream: &mut MediaStream, action: BridgeAction) {
    match action {
        BridgeAction::Continue => {}
        BridgeAction::HangUp => hang_up(c, "the agent hung up"),
        BridgeAction::BackendLost(reason) => {
            tracing::warn!(call = %c.call, %reason, "the AI backend is gone");
            super::metrics::Metrics::inc(&super::metrics::Metrics::global().backend_failures);
            if !c.hung_up {
                activate_fallback(c, stream, &reason);
            }
        }
    }
}

/// Plays the fallback prompt (then hangs up or transfers), or hangs up when there is none.
fn activate_fallback(c: &mut CallMedia, stream: &mut MediaStream, why: &str) {
    let Some(f) = c.fallback.as_mut() else {
        return hang_up(c, why);
    };
    if f.active {
        return;
    }
    f.active = true;
    match f.play.take() {
        Some(play) => {
            tracing::info!(call = %c.call, reason = why, "playing the fallback prompt");
            stream.flush();
            c.agent = play;
        }
        None => match f.transfer_to.clone() {
            Some(target) => fallback_transfer(c, target),
            None => hang_up(c, why),
        },
    }
}

/// Transfers the call to the fallback target; if that fails, hangs up.
fn fallback_transfer(c: &mut CallMedia, target: String) {
    c.hung_up = true;
    let call = c.call;
    let commands = c.commands.clone();
    tracing::info!(%call, %target, "fallback: transferring");
    tokio::spawn(async move {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cmd = CallCommand::Transfer {
            call,
            target,
            reply: tx,
        };
        let ok = commands.send(cmd).await.is_ok() && matches!(rx.await, Ok(Ok(_)));
        if !ok {
            let _ = commands
                .send(CallCommand::MediaHangup {
                    call,
                    reason: "fallback transfer failed".into(),
                })
                .await;
        }
    });
}

fn hang_up(c: &mut CallMedia, reason: &str) {
    if c.hung_up {
        return;
    }
    c.hung_up = true;
    let _ = c.commands.try_send(CallCommand::MediaHangup {
        call: c.call,
        reason: reason.to_owned(),
    });
}

/// The agent for a call. `Play` reads and resamples its file, so it is built off the runtime.
/// Also returns a realtime agent's fallback prompt, loaded now so that it can play at once.
async fn build_agent(
    kind: AgentKind,
    rate: u32,
    frame: Duration,
) -> Result<(Box<dyn LocalAgent>, Option<Box<dyn LocalAgent>>), String> {
    let format = FrameFormat::new(rate, frame).map_err(|e| e.to_string())?;
    let load = |spec: crate::agent::PlaySpec| async move {
        tokio::task::spawn_blocking(move || Play::new(&spec, format))
            .await
            .map_err(|e| e.to_string())?
            .map(|p| Box::new(p) as Box<dyn LocalAgent>)
            .map_err(|e| e.to_string())
    };
    match kind {
        AgentKind::Hold => Ok((Box::new(Silent), None)),
        AgentKind::Echo { delay } => Ok((Box::new(Echo::new(format, delay)), None)),
        AgentKind::Play(spec) => Ok((load(spec).await?, None)),
        AgentKind::Ai(ra) => {
            let prompt = match &ra.fallback {
                Fallback::Prompt {
                    prompt: Some(prompt),
                    ..
                } => match load(prompt.clone()).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(error = %e, "the fallback prompt cannot be loaded");
                        None
                    }
                },
                Fallback::Prompt { prompt: None, .. } | Fallback::Reject { .. } => None,
            };
            Ok((Box::new(Silent), prompt))
        }
    }
}

/// The hold agent: listens, says nothing (the media core sends silence).
struct Silent;

impl LocalAgent for Silent {
    fn on_frame(&mut self, _caller: &[i16], _out: &mut Vec<i16>) -> AgentAction {
        AgentAction::Continue
    }
}
