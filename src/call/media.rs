//! One task per answered call: owns the call's RTP/RTCP sockets, drives its sans-IO
//! [`MediaStream`], feeds the local agent and the recorder, and reports back to the call
//! manager through the driver's command channel.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::{AgentKind, CallCommand, CallTable};
use crate::agent::{AgentAction, Echo, FrameFormat, LocalAgent, Play};
use crate::media::dtmf::Digit;
use crate::media::rtcp::{NtpClock, NtpTime};
use crate::media::rtp::Ssrc;
use crate::media::stream::{MediaConfig, MediaEvent, MediaOutput, MediaStream};
use crate::runtime::Commands;
use crate::runtime::recorder::RecorderHandle;
use crate::runtime::rtp::RtpSockets;
use crate::sdp::NegotiatedMedia;
use crate::sip::CallHandle;

/// Capacity of a media task's control queue.
pub const MEDIA_CONTROL_QUEUE: usize = 64;
/// How often a media task copies its statistics into the call table.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Largest datagram read from an RTP socket.
const RTP_BUFFER: usize = 2048;

/// What the call manager tells a media task.
#[derive(Debug)]
pub enum MediaControl {
    /// The session changed (re-INVITE/UPDATE): hold, resume, codec or address.
    Update(NegotiatedMedia),
    /// DTMF received by SIP INFO.
    InfoDtmf {
        /// Content-Type.
        content_type: String,
        /// Body.
        body: Vec<u8>,
    },
    /// Send DTMF by RFC 4733.
    SendDtmf {
        /// The digits.
        digits: Vec<Digit>,
        /// Each digit's length.
        duration: Duration,
    },
}

/// What a media task needs.
pub struct MediaTaskSpec {
    /// The call.
    pub call: CallHandle,
    /// Its sockets, bound when the SDP was made.
    pub sockets: RtpSockets,
    /// The negotiated session.
    pub negotiated: NegotiatedMedia,
    /// The agent that answers the audio.
    pub agent: AgentKind,
    /// Where to record, if recording.
    pub recording: Option<PathBuf>,
    /// RTP inactivity timeout.
    pub rtp_timeout: Option<Duration>,
    /// Jitter-buffer bounds.
    pub jitter: (Duration, Duration),
    /// The shared call table.
    pub table: CallTable,
    /// The driver's command channel, to report back.
    pub commands: Commands<CallCommand>,
}

/// Starts the task; the returned sender controls it, and dropping it stops the task.
pub fn spawn(spec: MediaTaskSpec) -> Result<mpsc::Sender<MediaControl>, String> {
    let (tx, rx) = mpsc::channel(MEDIA_CONTROL_QUEUE);
    let now = Instant::now();
    let cfg = MediaConfig {
        negotiated: spec.negotiated.clone(),
        local_ssrc: Ssrc(rand::random()),
        cname: format!("voxline-{}", spec.call.0),
        jitter_min: spec.jitter.0,
        jitter_max: spec.jitter.1,
        rtp_timeout: spec.rtp_timeout,
        latch_window: Duration::from_secs(5),
        seed: rand::random(),
        ntp: NtpClock::new(
            now,
            NtpTime::from_unix(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default(),
            ),
        ),
        outbound_capacity: Duration::from_secs(4),
    };
    let stream = MediaStream::new(cfg, now).map_err(|e| e.to_string())?;
    let rtp = to_tokio(spec.sockets.rtp.try_clone().map_err(|e| e.to_string())?)?;
    let rtcp = match &spec.sockets.rtcp {
        Some(s) => Some(to_tokio(s.try_clone().map_err(|e| e.to_string())?)?),
        None => None,
    };
    tokio::spawn(run(spec, stream, rtp, rtcp, rx));
    Ok(tx)
}

fn to_tokio(s: std::net::UdpSocket) -> Result<UdpSocket, String> {
    s.set_nonblocking(true).map_err(|e| e.to_string())?;
    UdpSocket::from_std(s).map_err(|e| e.to_string())
}

async fn run(
    spec: MediaTaskSpec,
    mut stream: MediaStream,
    rtp: UdpSocket,
    rtcp: Option<UdpSocket>,
    mut control: mpsc::Receiver<MediaControl>,
) {
    let MediaTaskSpec {
        call,
        sockets,
        agent,
        recording,
        table,
        commands,
        ..
    } = spec;
    let mut agent = match build_agent(agent, stream.sample_rate(), stream.frame_duration()).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(%call, error = %e, "the agent cannot start: hanging up");
            let _ = commands.try_send(CallCommand::MediaHangup { call, reason: e });
            Box::new(Silent)
        }
    };
    let mut recorder = recording.and_then(|path| match RecorderHandle::spawn(&path, stream.sample_rate()) {
        Ok((handle, join)) => {
            update(&table, call, |i| i.recording = Some(path.display().to_string()));
            Some((handle, join))
        }
        Err(e) => {
            tracing::warn!(%call, path = %path.display(), error = %e, "cannot record this call");
            None
        }
    });
    let epoch = (Instant::now(), tokio::time::Instant::now());
    let mut buf = vec![0u8; RTP_BUFFER];
    let mut rtcp_buf = vec![0u8; RTP_BUFFER];
    let mut out = Vec::with_capacity(stream.frame_samples());
    let mut next_stats = Instant::now() + STATS_INTERVAL;
    let mut hung_up = false;
    loop {
        // Drain the stream.
        let deadline = loop {
            match stream.poll_output() {
                MediaOutput::Transmit {
                    to,
                    payload,
                    rtcp: is_rtcp,
                } => {
                    let sock = if is_rtcp {
                        rtcp.as_ref().unwrap_or(&rtp)
                    } else {
                        &rtp
                    };
                    // A full socket buffer drops the packet: real-time audio is not queued.
                    let _ = sock.try_send_to(&payload, to);
                }
                MediaOutput::Event(ev) => match ev {
                    MediaEvent::Frame { caller, sent } => {
                        if let Some((r, _)) = recorder.as_mut() {
                            // A full recorder queue drops the frame; the recorder fills the gap
                            // with silence so the timeline stays aligned.
                            let _ = r.try_send_frame(&caller, &sent);
                        }
                        if !stream.is_sending() {
                            // On hold the agent pauses with the media: otherwise it would
                            // answer the hold music, and what it says would pile up in the
                            // outbound queue and play, late, after the resume (an echo would
                            // then lag by the length of the hold for the rest of the call).
                            continue;
                        }
                        out.clear();
                        let action = agent.on_frame(&caller, &mut out);
                        if !out.is_empty() && stream.send_audio(&out).is_err() {
                            tracing::trace!(%call, "agent audio dropped: outbound queue full");
                        }
                        if action == AgentAction::HangUp && !hung_up {
                            hung_up = true;
                            let _ = commands.try_send(CallCommand::MediaHangup {
                                call,
                                reason: "agent finished".into(),
                            });
                        }
                    }
                    MediaEvent::Dtmf(d) => {
                        tracing::info!(%call, digit = %d.digit, method = ?d.method, duration_ms = d.duration_ms, "DTMF");
                        agent.on_dtmf(d.digit.as_char());
                        update(&table, call, |i| i.dtmf.push(format!("{}", d.digit)));
                    }
                    MediaEvent::Latched { addr } => {
                        tracing::debug!(%call, %addr, "RTP source latched")
                    }
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
                        if !hung_up {
                            hung_up = true;
                            let _ = commands.try_send(CallCommand::MediaHangup {
                                call,
                                reason: "RTP timeout".into(),
                            });
                        }
                    }
                    MediaEvent::RemoteBye => tracing::debug!(%call, "RTCP BYE from the peer"),
                },
                MediaOutput::Timeout(t) => break t,
            }
        };
        let now = Instant::now();
        if now >= next_stats {
            next_stats = now + STATS_INTERVAL;
            let stats = stream.stats();
            update(&table, call, |i| i.media = Some(stats));
        }
        let wake = deadline.min(next_stats);
        let sleep = tokio::time::sleep_until(to_tokio_instant(epoch, wake));
        let rtcp_recv = async {
            match &rtcp {
                Some(s) => s.recv_from(&mut rtcp_buf).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = rtp.recv_from(&mut buf) => {
                if let Ok((n, src)) = r {
                    stream.handle_rtp(Instant::now(), src, &buf[..n]);
                }
            }
            r = rtcp_recv => {
                if let Ok((n, src)) = r {
                    let src: SocketAddr = src;
                    stream.handle_rtcp(Instant::now(), src, &rtcp_buf[..n]);
                }
            }
            c = control.recv() => match c {
                Some(MediaControl::Update(n)) => {
                    if let Err(e) = stream.update(Instant::now(), n) {
                        tracing::warn!(%call, error = %e, "media update failed");
                    }
                }
                Some(MediaControl::InfoDtmf { content_type, body }) => {
                    stream.handle_info_dtmf(Instant::now(), &content_type, &body);
                }
                Some(MediaControl::SendDtmf { digits, duration }) => {
                    for d in digits {
                        if let Err(e) = stream.send_dtmf(Instant::now(), d, duration) {
                            tracing::warn!(%call, error = %e, "cannot send DTMF");
                        }
                    }
                }
                None => break,
            },
            _ = sleep => stream.handle_timeout(Instant::now()),
        }
    }
    // Say goodbye on RTCP, then release the sockets.
    stream.close(Instant::now());
    while let MediaOutput::Transmit {
        to,
        payload,
        rtcp: is_rtcp,
    } = stream.poll_output()
    {
        let sock = if is_rtcp {
            rtcp.as_ref().unwrap_or(&rtp)
        } else {
            &rtp
        };
        let _ = sock.try_send_to(&payload, to);
    }
    let stats = stream.stats();
    update(&table, call, |i| i.media = Some(stats));
    if let Some((handle, join)) = recorder.take() {
        handle.finish();
        match tokio::task::spawn_blocking(move || join.join()).await {
            Ok(Ok(Ok(info))) => {
                tracing::info!(%call, path = %info.path.display(), seconds = info.duration.as_secs_f32(), "recording finished")
            }
            Ok(Ok(Err(e))) => tracing::warn!(%call, error = %e, "recording could not be finished"),
            _ => tracing::warn!(%call, "the recorder thread failed"),
        }
    }
    drop(sockets);
}

/// The agent for a call. `Play` reads and resamples its file, so it is built off the runtime.
async fn build_agent(
    kind: AgentKind,
    rate: u32,
    frame: Duration,
) -> Result<Box<dyn LocalAgent>, String> {
    let format = FrameFormat::new(rate, frame).map_err(|e| e.to_string())?;
    match kind {
        AgentKind::Hold => Ok(Box::new(Silent)),
        AgentKind::Echo { delay } => Ok(Box::new(Echo::new(format, delay))),
        AgentKind::Play(spec) => tokio::task::spawn_blocking(move || Play::new(&spec, format))
            .await
            .map_err(|e| e.to_string())?
            .map(|p| Box::new(p) as Box<dyn LocalAgent>)
            .map_err(|e| e.to_string()),
    }
}

/// The hold agent: listens, says nothing (the media core sends silence).
struct Silent;

impl LocalAgent for Silent {
    fn on_frame(&mut self, _caller: &[i16], _out: &mut Vec<i16>) -> AgentAction {
        AgentAction::Continue
    }
}

fn update(table: &CallTable, call: CallHandle, f: impl FnOnce(&mut super::CallInfo)) {
    if let Ok(mut t) = table.lock()
        && let Some(i) = t.get_mut(&call.0)
    {
        f(i);
    }
}

fn to_tokio_instant(epoch: (Instant, tokio::time::Instant), t: Instant) -> tokio::time::Instant {
    match t.checked_duration_since(epoch.0) {
        Some(d) => epoch.1 + d,
        None => epoch.1,
    }
}
