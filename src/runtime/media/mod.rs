//! Call media on a few worker tasks: each worker owns many calls' RTP/RTCP sockets and
//! [`MediaStream`]s, and wakes once per frame tick for all of them.
//!
//! Every call's tick schedule starts on a shared 20 ms grid (counted from the pool's start),
//! so the calls on a worker share their deadlines: one wake-up serves them all, and a wake-up
//! looks only at the calls due ([`schedule`]). It serves them in three phases (all reads, all
//! media work, all sends), with the frame and packet buffers shared by the worker's calls
//! ([`io`]). Sockets are read at the ticks, not on every packet; the kernel's receive
//! timestamp (`SO_TIMESTAMPNS`) gives each packet its true arrival time, so jitter
//! measurement is exact and nothing is delayed: playout happens at ticks anyway, and every
//! packet that arrived before a tick is read before that tick's playout.
//!
//! The call layer's part of a call (its agent, its AI backend, its call-table entry) is a
//! [`MediaCall`], served by the worker the way [`super::CallHandler`] is served by the SIP
//! driver: the worker owns the sockets, the clock and the stream, and calls into it.

mod io;
mod schedule;
mod worker;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

use crate::media::rtcp::{NtpClock, NtpTime};
use crate::media::rtp::Ssrc;
use crate::media::stream::{MediaConfig, MediaError, MediaEvent, MediaStats, MediaStream};
use crate::runtime::rtp::RtpSockets;
use crate::sdp::NegotiatedMedia;
use crate::sip::CallHandle;

use schedule::Grid;
use worker::{Slot, WorkerMsg};

/// Capacity of a worker's queue (new calls, control messages, removals).
pub const WORKER_QUEUE: usize = 4096;
/// How often a call's [`MediaCall::stats`] gets fresh media statistics.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How often a separate RTCP socket is read. Reports come every ~5 s and carry their kernel
/// arrival time, so reading them late costs no accuracy (RTT stays exact). Even an empty read
/// costs a system call: at 100 ms this was one receive call in six.
const RTCP_POLL: Duration = Duration::from_millis(500);
/// The tick grid all calls' schedules start on: the usual 20 ms ptime, so that the calls of a
/// worker share one wake-up per frame. Deadlines other than frame ticks (RTCP reports,
/// statistics, DTMF and RTP timeouts) are served at the next grid point or tick.
const GRID: Duration = Duration::from_millis(20);
/// How often a call that [`MediaCall::wants_pump`] is looked at between frame ticks: a reply
/// from an AI backend then starts within this much of its arrival (sent ahead of the tick,
/// see [`MediaStream::send_ahead`]) and a barge-in is handled as quickly.
pub const PUMP_INTERVAL: Duration = Duration::from_millis(5);

/// One tick's frames, as [`MediaCall::on_frame`] gets them.
pub struct TickFrame<'a> {
    /// The tick.
    pub now: Instant,
    /// What the caller said (after the jitter buffer and decoding).
    pub caller: &'a [i16],
    /// What went out in the same tick, as the far end decodes it.
    pub sent: &'a [i16],
    /// The caller's G.711 bytes, when [`Prepared::caller_encoded`].
    pub encoded: Option<&'a [u8]>,
    /// False on hold.
    pub sending: bool,
    /// The clock to time work on the frame with (the voice chain's stages).
    pub clock: &'a dyn crate::dsp::StageClock,
}

/// The machine's monotonic clock, for timing work on the media workers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Monotonic;

impl crate::dsp::StageClock for Monotonic {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// The call layer's part of one call's media, as a media worker serves it. Every method runs
/// on the worker, synchronously, with the worker's clock reading: it must not block.
///
/// One service of a call at `now`: the packets read are handed to the stream, then
/// [`pump`](Self::pump), then [`tick`](Self::tick) until it returns false, then the stream's
/// timers; its output is sent and its events go to [`on_frame`](Self::on_frame) and
/// [`on_event`](Self::on_event); last [`after_ticks`](Self::after_ticks).
pub trait MediaCall: Send + 'static {
    /// Control messages for the call ([`MediaHandle::try_send`]).
    type Control: Send + 'static;

    /// Whether to wake between ticks for [`pump`](Self::pump) (a live AI backend).
    fn wants_pump(&self) -> bool {
        false
    }

    /// Takes in what arrived from outside the media (an AI backend's audio and events):
    /// before each service's ticks, and every [`PUMP_INTERVAL`] between ticks while
    /// [`wants_pump`](Self::wants_pump). Between ticks, a reply that starts now is sent
    /// ahead of the tick ([`MediaStream::send_ahead`]).
    fn pump(&mut self, stream: &mut MediaStream, now: Instant) {
        let _ = (stream, now);
    }

    /// Runs the stream's next due tick, if any ([`MediaStream::start_tick`] and
    /// [`MediaStream::finish_tick`], a local agent answering in between); whether one ran.
    /// `out` is a scratch buffer for the agent's frame.
    fn tick(&mut self, stream: &mut MediaStream, out: &mut Vec<i16>, now: Instant) -> bool;

    /// After a service's ticks, and after a pump.
    fn after_ticks(&mut self, stream: &mut MediaStream, now: Instant) {
        let _ = (stream, now);
    }

    /// One tick's frames ([`MediaEvent::Frame`]).
    fn on_frame(&mut self, frame: TickFrame<'_>) {
        let _ = frame;
    }

    /// Any other event of the stream.
    fn on_event(&mut self, stream: &mut MediaStream, event: MediaEvent, now: Instant);

    /// A control message from the call layer.
    fn control(&mut self, stream: &mut MediaStream, control: Self::Control, now: Instant);

    /// Fresh statistics, every [`STATS_INTERVAL`] and once more at the end.
    fn stats(&mut self, stats: MediaStats) {
        let _ = stats;
    }

    /// The call's media cannot go on (its RTP port could not be opened again): end the call.
    fn failed(&mut self, reason: &'static str);

    /// The recording started; it goes to `path`.
    fn recording(&mut self, path: &Path) {
        let _ = path;
    }

    /// The call is over, before the stream's final RTCP.
    fn close(&mut self, now: Instant) {
        let _ = now;
    }
}

/// What a call's media needs from the call layer to start.
#[derive(Debug)]
pub struct MediaStart {
    /// The call.
    pub call: CallHandle,
    /// Its sockets, bound when the SDP was made.
    pub sockets: RtpSockets,
    /// The negotiated session.
    pub negotiated: NegotiatedMedia,
    /// RTP inactivity timeout.
    pub rtp_timeout: Option<Duration>,
    /// Jitter-buffer bounds (minimum, maximum).
    pub jitter: (Duration, Duration),
    /// Where to record, if recording.
    pub recording: Option<PathBuf>,
    /// A browser call's WebRTC session (ICE, DTLS-SRTP), which carries the stream's RTP on
    /// the RTP socket; `None` for a SIP phone's plain or SDES-SRTP media.
    pub webrtc: Option<Box<crate::media::webrtc::WebRtcPeer>>,
}

/// What the stream is, for the call layer preparing its part.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo {
    /// Samples per second of the stream's frames.
    pub sample_rate: u32,
    /// One frame.
    pub frame: Duration,
    /// When the media was started (the origin of the call's media timeline).
    pub origin: Instant,
}

/// The call layer's part, ready to be served.
#[derive(Debug)]
pub struct Prepared<G> {
    /// The call's part.
    pub call: G,
    /// Whether the stream hands out the caller's G.711 bytes too (an AI backend that takes
    /// them as they are).
    pub caller_encoded: bool,
}

/// Why a call's media could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The negotiated session cannot make a stream.
    #[error("the media stream cannot start: {0}")]
    Stream(#[from] MediaError),
    /// The sockets cannot be set up.
    #[error("the RTP sockets cannot be set up: {0}")]
    Socket(#[from] std::io::Error),
}

/// The media worker's queue is full (or the worker stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the media worker is busy")]
pub struct MediaQueueFull;

/// The media workers: created by [`super::start`] on its runtime, one per core. They stop
/// when the pool and every [`MediaHandle`] and [`MediaLink`] are gone.
pub struct MediaPool<G: MediaCall> {
    inner: Arc<Pool<G>>,
}

struct Pool<G: MediaCall> {
    workers: Vec<mpsc::Sender<WorkerMsg<G>>>,
    next: AtomicUsize,
    grid: Grid,
}

impl<G: MediaCall> Clone for MediaPool<G> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<G: MediaCall> fmt::Debug for MediaPool<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaPool")
            .field("workers", &self.inner.workers.len())
            .finish()
    }
}

impl<G: MediaCall> MediaPool<G> {
    /// Spawns `workers` media workers (at least one) on the current tokio runtime.
    pub(crate) fn new(workers: usize) -> Self {
        let workers = (0..workers.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel(WORKER_QUEUE);
                // A worker ends when every sender is gone (the runtime stopped and every
                // call ended); a panic is a death, and its calls would hear nothing.
                super::health::supervise(
                    format!("media worker {i}"),
                    tokio::spawn(worker::run(i, rx)),
                    |_: &()| true,
                );
                tx
            })
            .collect();
        Self {
            inner: Arc::new(Pool {
                workers,
                next: AtomicUsize::new(0),
                grid: Grid::new(Instant::now(), GRID),
            }),
        }
    }

    /// Starts a call's media on the next worker (round-robin: calls are alike enough that
    /// counting them is as good as measuring). The stream is made now; `prepare` builds the
    /// call layer's part off the worker (a play agent reads its file), then the call joins
    /// its worker. The handle comes back at once, and dropping it ends the media.
    pub fn start<F, Fut>(&self, spec: MediaStart, prepare: F) -> Result<MediaHandle<G>, StartError>
    where
        F: FnOnce(StreamInfo, MediaLink<G::Control>) -> Fut,
        Fut: Future<Output = Prepared<G>> + Send + 'static,
    {
        let pool = &self.inner;
        let i = pool.next.fetch_add(1, Ordering::Relaxed) % pool.workers.len().max(1);
        let Some(tx) = pool.workers.get(i).cloned() else {
            return Err(StartError::Socket(std::io::Error::other("no media worker")));
        };
        let MediaStart {
            call,
            sockets,
            negotiated,
            rtp_timeout,
            jitter,
            recording,
            webrtc,
        } = spec;
        let now = Instant::now();
        let start = pool.grid.at_or_after(now);
        let cfg = MediaConfig {
            negotiated,
            local_ssrc: Ssrc(rand::random()),
            cname: format!("voxline-{}", call.0),
            jitter_min: jitter.0,
            jitter_max: jitter.1,
            rtp_timeout,
            latch_window: Duration::from_secs(5),
            seed: rand::random(),
            ntp: NtpClock::new(
                now,
                NtpTime::from_unix(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default(),
                ),
            ),
            outbound_capacity: Duration::from_secs(4),
        };
        let mut stream = MediaStream::new(cfg, start)?;
        io::prepare_sockets(&sockets)?;
        let info = StreamInfo {
            sample_rate: stream.sample_rate(),
            frame: stream.frame_duration(),
            origin: now,
        };
        let link = MediaLink {
            call,
            tx: Arc::new(tx.clone()),
        };
        let prepared = prepare(info, link);
        let grid = pool.grid;
        let worker_tx = tx.clone();
        tokio::spawn(async move {
            let Prepared {
                call: mut part,
                caller_encoded,
            } = prepared.await;
            stream.set_caller_encoded(caller_encoded);
            let recorder = recording.and_then(|path| {
                match crate::runtime::recorder::RecorderHandle::spawn(&path, stream.sample_rate())
                {
                    Ok(r) => {
                        part.recording(&path);
                        Some(r)
                    }
                    Err(e) => {
                        tracing::warn!(%call, path = %path.display(), error = %e, "cannot record this call");
                        None
                    }
                }
            });
            let mut slot = Slot::new(call, stream, sockets, part, recorder, grid, Instant::now());
            slot.set_webrtc(webrtc);
            let _ = worker_tx.send(WorkerMsg::Add(Box::new(slot))).await;
        });
        Ok(MediaHandle { call, tx })
    }
}

/// A call's media as the call layer holds it: control messages go to its worker, and
/// dropping the handle ends the media (final RTCP, recording closed, sockets released).
pub struct MediaHandle<G: MediaCall> {
    call: CallHandle,
    tx: mpsc::Sender<WorkerMsg<G>>,
}

impl<G: MediaCall> fmt::Debug for MediaHandle<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaHandle")
            .field("call", &self.call)
            .finish()
    }
}

impl<G: MediaCall> MediaHandle<G> {
    /// Sends a control message if the worker has room.
    pub fn try_send(&self, c: G::Control) -> Result<(), MediaQueueFull> {
        self.tx
            .try_send(WorkerMsg::Control(self.call, c))
            .map_err(|_| MediaQueueFull)
    }

    /// A link to the same call's media that does not own it (dropping a link does not end
    /// the media).
    pub fn link(&self) -> MediaLink<G::Control> {
        MediaLink {
            call: self.call,
            tx: Arc::new(self.tx.clone()),
        }
    }
}

impl<G: MediaCall> Drop for MediaHandle<G> {
    fn drop(&mut self) {
        let msg = WorkerMsg::Remove(self.call);
        if let Err(mpsc::error::TrySendError::Full(msg)) = self.tx.try_send(msg) {
            // The queue is full: deliver the removal as soon as there is room.
            let tx = self.tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(msg).await;
            });
        }
    }
}

/// Sends control messages to a call's media without owning it (for the call's agent task).
/// It names only the control type, not the call layer's part.
pub struct MediaLink<C> {
    call: CallHandle,
    tx: Arc<dyn ControlSender<C>>,
}

impl<C> Clone for MediaLink<C> {
    fn clone(&self) -> Self {
        Self {
            call: self.call,
            tx: self.tx.clone(),
        }
    }
}

impl<C> fmt::Debug for MediaLink<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaLink")
            .field("call", &self.call)
            .finish()
    }
}

impl<C> MediaLink<C> {
    /// Sends a control message if the worker has room.
    pub fn try_send(&self, c: C) -> Result<(), MediaQueueFull> {
        self.tx.try_send(self.call, c)
    }
}

/// A worker's queue, seen through its control messages only.
trait ControlSender<C>: Send + Sync {
    fn try_send(&self, call: CallHandle, c: C) -> Result<(), MediaQueueFull>;
}

impl<G: MediaCall> ControlSender<G::Control> for mpsc::Sender<WorkerMsg<G>> {
    fn try_send(&self, call: CallHandle, c: G::Control) -> Result<(), MediaQueueFull> {
        mpsc::Sender::try_send(self, WorkerMsg::Control(call, c)).map_err(|_| MediaQueueFull)
    }
}
