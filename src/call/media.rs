//! Call media on a few worker tasks: each worker owns many calls' RTP/RTCP sockets and
//! [`MediaStream`]s, and wakes once per frame tick for all of them.
//!
//! Every call's tick schedule starts on a shared 20 ms grid (counted from the process start),
//! so the calls on a worker share their deadlines: one wake-up serves them all, and a wake-up
//! looks only at the calls due. It serves them in three phases (all reads, all media work, all
//! sends), with the frame and packet buffers shared by the worker's calls. Sockets are read at the ticks, not on every packet; the kernel's receive timestamp
//! (`SO_TIMESTAMPNS`) gives each packet its true arrival time, so jitter measurement is exact
//! and nothing is delayed: playout happens at ticks anyway, and every packet that arrived before
//! a tick is read before that tick's playout.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvmmsg, send, sendto, setsockopt, sockopt,
};
use tokio::sync::mpsc;

use super::agent::{AgentTaskSpec, CallParties, Fallback, NOTICE_QUEUE};
use super::bridge::{Bridge, BridgeAction};
use super::{AgentKind, CallCommand, CallTable};
use crate::agent::backend::{AudioFormat, BackendHandle};
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

/// Capacity of a worker's queue (new calls, control messages, removals).
pub const WORKER_QUEUE: usize = 4096;
/// How often the call table gets fresh media statistics.
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Largest datagram read from an RTP socket.
const RTP_BUFFER: usize = 2048;
/// How often a separate RTCP socket is read. Reports come every ~5 s and carry their kernel
/// arrival time, so reading them late costs no accuracy (RTT stays exact). Even an empty read
/// costs a system call: at 100 ms this was one receive call in six.
const RTCP_POLL: Duration = Duration::from_millis(500);
/// The tick grid all calls' schedules start on: the usual 20 ms ptime, so that the calls of a
/// worker share one wake-up per frame. Deadlines other than frame ticks (RTCP reports,
/// statistics, DTMF and RTP timeouts) are served at the next grid point or tick.
const GRID: Duration = Duration::from_millis(20);
/// How often a call with an AI backend looks at the backend's events between frame ticks: a
/// reply then starts within this much of its arrival (sent ahead of the tick, see
/// [`MediaStream::send_ahead`]) and a barge-in is handled as quickly.
const PUMP_INTERVAL: Duration = Duration::from_millis(5);

/// What the call manager tells a call's media.
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
    /// Send DTMF in the media: RFC 4733 events, or in-band tones.
    SendDtmf {
        /// The digits.
        digits: Vec<Digit>,
        /// Each digit's length.
        duration: Duration,
        /// Tones in the audio (ITU-T Q.23) instead of RFC 4733 events.
        inband: bool,
    },
    /// The AI agent hangs up: end the call once its goodbye has played.
    AgentHangup,
}

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
}

/// What a call's media needs.
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
    /// A realtime agent's backend; `None` with a realtime agent means the backend could not
    /// be reached and the agent's fallback prompt plays from the start.
    pub backend: Option<BackendSetup>,
}

/// The media worker's queue is full (or the worker stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the media worker is busy")]
pub struct MediaQueueFull;

/// A call's media as the call manager holds it: control messages go to its worker, and
/// dropping the handle ends the media (final RTCP, recording closed, sockets released).
#[derive(Debug)]
pub struct MediaHandle {
    call: CallHandle,
    tx: mpsc::Sender<WorkerMsg>,
}

impl MediaHandle {
    /// Sends a control message if the worker has room.
    pub fn try_send(&self, c: MediaControl) -> Result<(), MediaQueueFull> {
        self.tx
            .try_send(WorkerMsg::Control(self.call, c))
            .map_err(|_| MediaQueueFull)
    }

    /// A link to the same call's media that does not own it (dropping a link does not end
    /// the media).
    pub fn link(&self) -> MediaLink {
        MediaLink {
            call: self.call,
            tx: self.tx.clone(),
        }
    }
}

/// Sends control messages to a call's media without owning it (for the call's agent task).
#[derive(Debug, Clone)]
pub struct MediaLink {
    call: CallHandle,
    tx: mpsc::Sender<WorkerMsg>,
}

impl MediaLink {
    /// Sends a control message if the worker has room.
    pub fn try_send(&self, c: MediaControl) -> Result<(), MediaQueueFull> {
        self.tx
            .try_send(WorkerMsg::Control(self.call, c))
            .map_err(|_| MediaQueueFull)
    }
}

impl Drop for MediaHandle {
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

/// Starts a call's media on the next worker (round-robin).
pub fn spawn(spec: MediaTaskSpec) -> Result<MediaHandle, String> {
    let pool = workers();
    let tx = pool.pick();
    let call = spec.call;
    let now = Instant::now();
    let start = grid_start(now);
    let cfg = MediaConfig {
        negotiated: spec.negotiated.clone(),
        local_ssrc: Ssrc(rand::random()),
        cname: format!("voxline-{}", call.0),
        jitter_min: spec.jitter.0,
        jitter_max: spec.jitter.1,
        rtp_timeout: spec.rtp_timeout,
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
    let stream = MediaStream::new(cfg, start).map_err(|e| e.to_string())?;
    for s in std::iter::once(&spec.sockets.rtp).chain(spec.sockets.rtcp.as_ref()) {
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        // Without kernel timestamps the arrival time falls back to the read time.
        let _ = setsockopt(s, sockopt::ReceiveTimestampns, &true);
    }
    let wildcard = spec
        .sockets
        .rtp
        .local_addr()
        .is_ok_and(|a| a.ip().is_unspecified());
    let pktinfo = wildcard && watch_destination(&spec.sockets.rtp, true);
    let worker_tx = tx.clone();
    // Build the agent (a play agent reads and resamples its file) off the runtime, then hand
    // the call to its worker.
    tokio::spawn(async move {
        let MediaTaskSpec {
            call,
            sockets,
            agent,
            recording,
            table,
            commands,
            backend,
            ..
        } = spec;
        let realtime = match &agent {
            AgentKind::Realtime(r) => Some(r.clone()),
            _ => None,
        };
        let (agent, fallback_play) =
            match build_agent(agent, stream.sample_rate(), stream.frame_duration()).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(%call, error = %e, "the agent cannot start: hanging up");
                    let _ = commands.try_send(CallCommand::MediaHangup { call, reason: e });
                    (Box::new(Silent) as Box<dyn LocalAgent>, None)
                }
            };
        let link = MediaLink {
            call,
            tx: worker_tx.clone(),
        };
        let origin = Instant::now();
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
                }));
                if let Some(path) = &setup.transcript {
                    update(&table, call, |i| {
                        i.transcript = Some(path.display().to_string())
                    });
                }
                Some(Bridge::new(
                    control,
                    setup.handle.events,
                    setup.format,
                    ntx,
                    origin,
                ))
            }
            _ => None,
        };
        let recorder = recording.and_then(|path| match RecorderHandle::spawn(&path, stream.sample_rate()) {
            Ok(r) => {
                update(&table, call, |i| i.recording = Some(path.display().to_string()));
                Some(r)
            }
            Err(e) => {
                tracing::warn!(%call, path = %path.display(), error = %e, "cannot record this call");
                None
            }
        });
        // Only a realtime backend uses the caller's G.711 bytes (passthrough).
        let mut stream = stream;
        stream.set_caller_encoded(bridge.is_some());
        let media = CallMedia {
            call,
            stream: Box::new(stream),
            sockets,
            agent,
            recorder,
            table,
            commands,
            bridge,
            fallback: realtime.map(|ra| FallbackState {
                play: fallback_play,
                transfer_to: match &ra.fallback {
                    Fallback::Prompt { transfer_to, .. } => transfer_to.clone(),
                    Fallback::Reject { .. } => None,
                },
                active: false,
            }),
            hung_up: false,
            next_stats: Instant::now() + STATS_INTERVAL,
            next_pump: Instant::now() + PUMP_INTERVAL,
            next_rtcp_poll: Instant::now(),
            deadline: start,
            wake: start,
            service: start,
            linked: None,
            link_target: None,
            wildcard,
            pktinfo,
            last_rx: None,
        };
        let _ = worker_tx.send(WorkerMsg::Add(Box::new(media))).await;
    });
    Ok(MediaHandle { call, tx })
}

// ----- the worker pool -----

#[derive(Debug)]
enum WorkerMsg {
    Add(Box<CallMedia>),
    Control(CallHandle, MediaControl),
    Remove(CallHandle),
}

struct Pool {
    workers: Vec<mpsc::Sender<WorkerMsg>>,
}

impl Pool {
    fn pick(&self) -> mpsc::Sender<WorkerMsg> {
        // Round-robin: calls are alike enough that counting them is as good as measuring.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let i = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.workers.len();
        self.workers[i].clone()
    }
}

fn workers() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let workers = (0..n)
            .map(|i| {
                let (tx, rx) = mpsc::channel(WORKER_QUEUE);
                // A worker runs for the life of the process (the pool keeps its sender): any
                // end is a death, and its calls would hear nothing.
                crate::runtime::health::supervise(
                    format!("media worker {i}"),
                    tokio::spawn(worker(i, rx)),
                    |_: &()| false,
                );
                tx
            })
            .collect();
        Pool { workers }
    })
}

/// The instant every schedule's grid is counted from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// The next grid point at or after `now`.
fn grid_start(now: Instant) -> Instant {
    let e = epoch();
    // In u64 nanoseconds (584 years), not `as_nanos`'s u128: this runs for every call served.
    let since = now.saturating_duration_since(e);
    let since = since
        .as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(since.subsec_nanos()));
    let g = GRID.as_nanos() as u64;
    e + Duration::from_nanos(since.div_ceil(g).saturating_mul(g))
}

struct CallMedia {
    call: CallHandle,
    stream: Box<MediaStream>,
    sockets: RtpSockets,
    agent: Box<dyn LocalAgent>,
    recorder: Option<(
        RecorderHandle,
        std::thread::JoinHandle<std::io::Result<crate::runtime::recorder::RecordingInfo>>,
    )>,
    table: CallTable,
    commands: Commands<CallCommand>,
    /// A realtime agent's bridge to its backend.
    bridge: Option<Bridge>,
    /// A realtime agent's fallback (what plays when the backend is gone).
    fallback: Option<FallbackState>,
    hung_up: bool,
    next_stats: Instant,
    /// When a call with a backend next looks at its events (between ticks).
    next_pump: Instant,
    next_rtcp_poll: Instant,
    deadline: Instant,
    /// The wake-up time this call is queued under in its worker.
    wake: Instant,
    /// Its [`CallMedia::service_at`] when it was queued (a wake-up tells service from a
    /// backend pump without touching the stream).
    service: Instant,
    /// The peer the RTP socket is connected to ([`MediaStream::rtp_source`]), if it is.
    linked: Option<SocketAddr>,
    /// The last [`MediaStream::rtp_source`] acted on (connecting may have failed).
    link_target: Option<SocketAddr>,
    /// The RTP socket is bound to the wildcard address (connecting it binds it to the
    /// route's source address, see [`relink`]).
    wildcard: bool,
    /// `IP_PKTINFO` is on: each datagram tells the address it was sent to.
    pktinfo: bool,
    /// Source and destination of the latest RTP datagram, while `pktinfo` is on.
    last_rx: Option<(SocketAddr, IpAddr)>,
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallMedia")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

/// Calls removed before their media reached the worker. [`spawn`] hands back the handle at
/// once but sends the call to its worker only once the agent is built, so a BYE right after
/// the 200 can drop the handle (and send `Remove`) first; the `Add` that follows must then
/// end the media instead of starting it (it used to run, and hold its ports, until the RTP
/// timeout hung up the already-ended call). Bounded: a `Remove` whose `Add` never comes (the
/// agent task failed) is forgotten after [`EARLY_REMOVALS`] others.
#[derive(Debug, Default)]
struct EarlyRemovals {
    calls: VecDeque<CallHandle>,
}

/// How many early removals a worker remembers.
const EARLY_REMOVALS: usize = 1024;

impl EarlyRemovals {
    fn note(&mut self, call: CallHandle) {
        if self.calls.len() >= EARLY_REMOVALS {
            self.calls.pop_front();
        }
        self.calls.push_back(call);
    }

    /// Whether `call` was removed before it was added (and forgets it).
    fn take(&mut self, call: CallHandle) -> bool {
        match self.calls.iter().position(|&c| c == call) {
            Some(i) => {
                self.calls.remove(i);
                true
            }
            None => false,
        }
    }
}

async fn worker(index: usize, mut rx: mpsc::Receiver<WorkerMsg>) {
    let mut calls = Calls::default();
    let mut early = EarlyRemovals::default();
    let mut due: Vec<usize> = Vec::new();
    let mut batch = Batch::default();
    let base = (Instant::now(), tokio::time::Instant::now());
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    tracing::debug!(worker = index, "media worker started");
    loop {
        let next = calls.next_wake();
        if let Some(t) = next {
            let wake = to_tokio(base, t);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(WorkerMsg::Add(c)) => {
                    let mut c = *c;
                    if early.take(c.call) {
                        // The call ended while its agent was being built: its media never
                        // starts, and its sockets go now.
                        finish(c).await;
                    } else {
                        service(&mut c, Clock::now(), &mut batch);
                        calls.insert(c);
                    }
                }
                Some(WorkerMsg::Control(call, ctl)) => {
                    if let Some(slot) = calls.slot_of(call) {
                        calls.unschedule(slot);
                        if let Some(c) = calls.get_mut(slot) {
                            control(c, ctl);
                            service(c, Clock::now(), &mut batch);
                        }
                        calls.schedule(slot);
                    }
                }
                Some(WorkerMsg::Remove(call)) => match calls.remove(call) {
                    Some(c) => finish(c).await,
                    // Not added yet: the BYE came while the agent was being built.
                    None => early.note(call),
                },
                None => break,
            },
            _ = &mut sleep, if next.is_some() => {}
        }
        // Only the calls whose time has come, in one batch with one clock reading, in three
        // phases: all reads, then all media work, then all sends. Each phase runs the same
        // code for every call in turn (the kernel's receive path, the media pipeline, the
        // kernel's send path), which keeps it warm in the caches.
        let clock = Clock::now();
        calls.take_due(clock.now, &mut due);
        if due.is_empty() {
            continue;
        }
        // A call with a backend is also woken between its ticks, only to look at the
        // backend's events; it takes no part in the batch's phases.
        due.retain(|&slot| match calls.get_mut(slot) {
            Some(c) if !c.service_due(clock.now) => {
                pump(c, clock.now, &mut batch.tx);
                calls.schedule(slot);
                false
            }
            _ => true,
        });
        for &slot in &due {
            if let Some(c) = calls.get_mut(slot) {
                receive(c, slot, clock, &mut batch.rx);
            }
        }
        let mut read = 0;
        for &slot in &due {
            let mine = batch.rx.from(read, slot);
            read += mine.len();
            if let Some(c) = calls.get_mut(slot) {
                process(c, clock.now, mine, &batch.rx.data, &mut batch.tx);
                if c.relink_due(clock.now) {
                    batch.relink.push(slot);
                }
            }
            calls.schedule(slot);
        }
        batch.rx.clear();
        batch.tx.send_all();
        // After the sends: they name the sockets by descriptor, and relinking may replace one.
        for &slot in &batch.relink {
            if let Some(c) = calls.get_mut(slot) {
                relink(c, clock.now);
            }
        }
        batch.relink.clear();
        due.clear();
    }
}

/// What one batch of calls received and will send.
#[derive(Default)]
struct Batch {
    rx: Received,
    tx: Outgoing,
    /// Calls whose RTP socket is to be connected or freed after the sends.
    relink: Vec<usize>,
}

/// Datagrams read in a batch's first phase, packed one after the other.
#[derive(Default)]
struct Received {
    packets: Vec<RxPacket>,
    data: Vec<u8>,
}

/// One datagram in [`Received`].
#[derive(Debug, Clone, Copy)]
struct RxPacket {
    slot: usize,
    rtcp: bool,
    arrived: Instant,
    src: SocketAddr,
    start: usize,
    len: usize,
}

impl Received {
    fn push(&mut self, slot: usize, rtcp: bool, arrived: Instant, src: SocketAddr, data: &[u8]) {
        self.packets.push(RxPacket {
            slot,
            rtcp,
            arrived,
            src,
            start: self.data.len(),
            len: data.len(),
        });
        self.data.extend_from_slice(data);
    }

    /// The packets of `slot` starting at index `from` (they were read in slot order).
    fn from(&self, from: usize, slot: usize) -> &[RxPacket] {
        let rest = self.packets.get(from..).unwrap_or_default();
        let n = rest.iter().take_while(|p| p.slot == slot).count();
        rest.get(..n).unwrap_or_default()
    }

    fn clear(&mut self) {
        self.packets.clear();
        self.data.clear();
    }
}

/// Datagrams to send at the end of a batch, packed one after the other; and the buffers the
/// calls of a worker share.
///
/// A stream hands out its frame and packet buffers and takes them back for reuse; instead of
/// going back to the stream they came from, they go to this pool and are lent to the next
/// call served. A few buffers then serve all the calls of a batch and stay in the cache,
/// where each call's own buffers would be cold each time it is served.
#[derive(Default)]
struct Outgoing {
    /// Socket, destination (`None`: the socket is connected to it), start and length in `data`.
    packets: Vec<(RawFd, Option<SocketAddr>, usize, usize)>,
    data: Vec<u8>,
    pcm: Vec<Vec<i16>>,
    bytes: Vec<Vec<u8>>,
    spare_packets: Vec<Vec<u8>>,
    /// The agent's output for one frame.
    agent_out: Vec<i16>,
}

/// Most spare buffers of one kind kept in [`Outgoing`].
const SPARE_MAX: usize = 8;

impl Outgoing {
    /// Lends a stream the buffers its next tick takes (it takes the last ones handed back).
    fn lend(&mut self, stream: &mut MediaStream) {
        if let (Some(caller), Some(sent)) = (self.pcm.pop(), self.pcm.pop()) {
            stream.recycle_frame(caller, sent);
        }
        if let Some(b) = self.bytes.pop() {
            stream.recycle_caller_encoded(b);
        }
        if stream.is_sending()
            && let Some(p) = self.spare_packets.pop()
        {
            stream.recycle_packet(p);
        }
    }

    fn spare_pcm(&mut self, v: Vec<i16>) {
        if self.pcm.len() < SPARE_MAX {
            self.pcm.push(v);
        }
    }

    fn push(&mut self, fd: RawFd, to: Option<SocketAddr>, payload: &[u8]) {
        self.packets.push((fd, to, self.data.len(), payload.len()));
        self.data.extend_from_slice(payload);
    }

    /// Sends everything queued. A full socket buffer drops the packet: real-time audio is
    /// not queued.
    fn send_all(&mut self) {
        for &(fd, to, start, len) in &self.packets {
            if let Some(payload) = self.data.get(start..start + len) {
                let _ = match to {
                    None => send(fd, payload, MsgFlags::empty()),
                    Some(SocketAddr::V4(a)) => {
                        sendto(fd, payload, &SockaddrIn::from(a), MsgFlags::empty())
                    }
                    Some(SocketAddr::V6(a)) => {
                        sendto(fd, payload, &SockaddrIn6::from(a), MsgFlags::empty())
                    }
                };
            }
        }
        self.packets.clear();
        self.data.clear();
    }
}

/// The monotonic and wall clocks read together, once per batch of calls: the wall clock
/// converts the kernel's receive timestamps to `Instant`s.
#[derive(Debug, Clone, Copy)]
struct Clock {
    now: Instant,
    wall: SystemTime,
}

impl Clock {
    fn now() -> Self {
        Self {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

impl CallMedia {
    /// When the call next needs service: its next frame tick, or sooner the grid point at or
    /// after its next other deadline (RTCP, statistics, timeouts), so that these never cost a
    /// wake-up of their own.
    fn service_at(&self) -> Instant {
        let other = grid_start(self.deadline.min(self.next_stats));
        match self.stream.next_tick() {
            Some(tick) => tick.min(other),
            None => other,
        }
    }

    /// Whether a wake-up at `now` is for service (else it is only to pump the backend).
    fn service_due(&self, now: Instant) -> bool {
        self.service <= now
    }

    /// When the worker must next look at the call: at its service, or sooner to pump a live
    /// backend's events.
    fn next_wake(&self) -> Instant {
        let at = self.service;
        match &self.bridge {
            Some(b) if !b.is_lost() => at.min(self.next_pump),
            _ => at,
        }
    }
}

/// A worker's calls, and when each next needs the worker: a wake-up serves only the calls
/// due, without looking at the others.
#[derive(Default)]
struct Calls {
    slots: Vec<Option<CallMedia>>,
    free: Vec<usize>,
    by_handle: HashMap<CallHandle, usize>,
    /// The slots of every scheduled call by wake-up time. Calls tick on a shared grid, so a
    /// few times hold all the calls: queuing a call is a push onto its time's list.
    queue: BTreeMap<Instant, Vec<usize>>,
    /// Emptied lists, for reuse.
    spare_lists: Vec<Vec<usize>>,
}

impl Calls {
    /// Adds a call and schedules it.
    fn insert(&mut self, c: CallMedia) {
        let call = c.call;
        let slot = match self.free.pop() {
            Some(s) => {
                if let Some(x) = self.slots.get_mut(s) {
                    *x = Some(c);
                }
                s
            }
            None => {
                self.slots.push(Some(c));
                self.slots.len() - 1
            }
        };
        self.by_handle.insert(call, slot);
        self.schedule(slot);
    }

    fn slot_of(&self, call: CallHandle) -> Option<usize> {
        self.by_handle.get(&call).copied()
    }

    fn get_mut(&mut self, slot: usize) -> Option<&mut CallMedia> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// Removes a call (and its wake-up).
    fn remove(&mut self, call: CallHandle) -> Option<CallMedia> {
        let slot = self.by_handle.remove(&call)?;
        self.unschedule(slot);
        let c = self.slots.get_mut(slot)?.take();
        self.free.push(slot);
        c
    }

    /// Queues the call's next wake-up ([`CallMedia::next_wake`]).
    fn schedule(&mut self, slot: usize) {
        let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        c.service = c.service_at();
        let at = c.next_wake();
        c.wake = at;
        let spare = &mut self.spare_lists;
        self.queue
            .entry(at)
            .or_insert_with(|| spare.pop().unwrap_or_default())
            .push(slot);
    }

    /// Takes the call's wake-up out of the queue (before its deadline changes).
    fn unschedule(&mut self, slot: usize) {
        let Some(c) = self.slots.get(slot).and_then(Option::as_ref) else {
            return;
        };
        if let Some(list) = self.queue.get_mut(&c.wake)
            && let Some(i) = list.iter().position(|&s| s == slot)
        {
            list.swap_remove(i);
            if list.is_empty()
                && let Some(list) = self.queue.remove(&c.wake)
            {
                self.spare_lists.push(list);
            }
        }
    }

    fn next_wake(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|(&t, _)| t)
    }

    /// Moves the slots due at `now` out of the queue into `due` (they must be scheduled
    /// again after service).
    fn take_due(&mut self, now: Instant, due: &mut Vec<usize>) {
        while let Some(entry) = self.queue.first_entry()
            && *entry.key() <= now
        {
            let mut list = entry.remove();
            due.append(&mut list);
            if self.spare_lists.len() < SPARE_MAX {
                self.spare_lists.push(list);
            }
        }
    }
}

/// Between ticks, a call with a backend: takes the backend's events and, when a reply has just
/// arrived and nothing is playing, sends its first packet now rather than at the next tick.
fn pump(c: &mut CallMedia, now: Instant, tx: &mut Outgoing) {
    c.next_pump = now + PUMP_INTERVAL;
    let Some(b) = c.bridge.as_mut() else {
        return;
    };
    let action = b.pump(&mut c.stream, now);
    bridge_action(c, action);
    if c.stream.send_ahead(now) {
        drain(c, tx);
    }
    if let Some(b) = c.bridge.as_mut() {
        let action = b.after_tick(&c.stream, now);
        bridge_action(c, action);
    }
}

/// Serves one call on its own (a new call, a control message): reads what arrived, runs due
/// ticks and sends.
fn service(c: &mut CallMedia, clock: Clock, batch: &mut Batch) {
    batch.rx.clear();
    receive(c, 0, clock, &mut batch.rx);
    process(
        c,
        clock.now,
        &batch.rx.packets,
        &batch.rx.data,
        &mut batch.tx,
    );
    batch.rx.clear();
    batch.tx.send_all();
    if c.relink_due(clock.now) {
        relink(c, clock.now);
    }
}

/// A batch's first phase for one call: reads its RTP socket, and its RTCP socket when due.
fn receive(c: &mut CallMedia, slot: usize, clock: Clock, rx: &mut Received) {
    let Clock {
        now,
        wall: wall_now,
    } = clock;
    let last_rx = &mut c.last_rx;
    read_socket(&c.sockets.rtp, now, wall_now, |t, src, dst, data| {
        if let Some(dst) = dst {
            *last_rx = Some((src, dst));
        }
        rx.push(slot, false, t, src, data)
    });
    if let Some(rtcp) = &c.sockets.rtcp
        && now >= c.next_rtcp_poll
    {
        c.next_rtcp_poll = now + RTCP_POLL;
        read_socket(rtcp, now, wall_now, |t, src, _, data| {
            rx.push(slot, true, t, src, data)
        });
    }
}

/// A batch's second phase for one call: hands it what was read, runs due ticks, queues what
/// to send, and hands frames to the agent and recorder.
fn process(c: &mut CallMedia, now: Instant, packets: &[RxPacket], data: &[u8], tx: &mut Outgoing) {
    c.next_pump = now + PUMP_INTERVAL;
    for p in packets {
        let Some(d) = data.get(p.start..p.start + p.len) else {
            continue;
        };
        if p.rtcp {
            c.stream.handle_rtcp(p.arrived, p.src, d);
        } else {
            c.stream.handle_rtp(p.arrived, p.src, d);
        }
    }
    if let Some(b) = c.bridge.as_mut() {
        let action = b.pump(&mut c.stream, now);
        bridge_action(c, action);
    }
    if now >= c.deadline {
        tx.lend(&mut c.stream);
    }
    // Tick by tick, the agent answering each frame before the next overdue tick sends: after
    // a late wake-up a local agent's audio for that tick is then sent, not silence. (On time,
    // one tick is due and this is one drain, as before.)
    // The local agent answers each caller frame before that tick's packet leaves (same-tick
    // reply, `call::tick`).
    while let Some(t) =
        super::tick::run_tick(&mut c.stream, c.agent.as_mut(), &mut tx.agent_out, now)
    {
        if t.dropped {
            tracing::trace!(call = %c.call, "agent audio dropped: outbound queue full");
        }
        if t.action == AgentAction::HangUp {
            agent_hung_up(c);
        }
        if c.stream.next_tick().is_some_and(|t| t <= now) {
            drain(c, tx);
        }
    }
    c.stream.handle_timeout(now);
    drain(c, tx);
    if let Some(b) = c.bridge.as_mut() {
        let action = b.after_tick(&c.stream, now);
        bridge_action(c, action);
    }
    // A realtime call whose backend never connected plays its fallback from the start.
    if c.bridge.is_none()
        && let Some(f) = c.fallback.as_ref()
        && !f.active
    {
        activate_fallback(c, "the backend could not be reached");
    }
    if now >= c.next_stats {
        c.next_stats = now + STATS_INTERVAL;
        let stats = c.stream.stats();
        update(&c.table, c.call, |i| i.media = Some(stats));
    }
}

/// Datagrams read per `recvmmsg` call: one per tick is normal, the rest absorbs bursts.
const BATCH: usize = 4;

/// Receive state reused across calls on one thread (`MultiHeaders` holds raw pointers, so it
/// stays on its thread; `service` is synchronous).
struct RxBatch {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: [[u8; RTP_BUFFER]; BATCH],
}

thread_local! {
    static RX: RefCell<RxBatch> = RefCell::new(RxBatch {
        headers: MultiHeaders::preallocate(
            BATCH,
            Some(nix::cmsg_space!(nix::sys::time::TimeSpec, nix::libc::in_pktinfo)),
        ),
        bufs: [[0u8; RTP_BUFFER]; BATCH],
    });
}

/// Reads every datagram queued on a non-blocking socket with `recvmmsg` (one system call for
/// the usual single packet, no extra call to learn the queue is empty), each with its kernel
/// arrival time and, when `IP_PKTINFO` is on, the address it was sent to.
fn read_socket(
    sock: &UdpSocket,
    now: Instant,
    wall_now: SystemTime,
    mut deliver: impl FnMut(Instant, SocketAddr, Option<IpAddr>, &[u8]),
) {
    RX.with(|rx| {
        let mut rx = rx.borrow_mut();
        let rx = &mut *rx;
        loop {
            let mut meta: [(usize, Option<SocketAddr>, Instant, Option<IpAddr>); BATCH] =
                [(0, None, now, None); BATCH];
            let count = {
                let [b0, b1, b2, b3] = &mut rx.bufs;
                let mut iovs = [
                    [IoSliceMut::new(&mut b0[..])],
                    [IoSliceMut::new(&mut b1[..])],
                    [IoSliceMut::new(&mut b2[..])],
                    [IoSliceMut::new(&mut b3[..])],
                ];
                let results = match recvmmsg(
                    sock.as_raw_fd(),
                    &mut rx.headers,
                    iovs.iter_mut(),
                    MsgFlags::MSG_DONTWAIT,
                    None,
                ) {
                    Ok(r) => r,
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return, // EAGAIN: nothing queued (or an ICMP error to clear)
                };
                let mut count = 0;
                for (slot, msg) in meta.iter_mut().zip(results) {
                    let src = msg.address.and_then(|a| sockaddr(&a));
                    let mut arrived = now;
                    let mut dst = None;
                    for cm in msg.cmsgs().into_iter().flatten() {
                        match cm {
                            ControlMessageOwned::ScmTimestampns(ts) => {
                                let at = UNIX_EPOCH
                                    + Duration::new(
                                        ts.tv_sec().max(0) as u64,
                                        ts.tv_nsec().max(0) as u32,
                                    );
                                let ago = wall_now.duration_since(at).unwrap_or_default();
                                arrived = now.checked_sub(ago).unwrap_or(now);
                            }
                            ControlMessageOwned::Ipv4PacketInfo(info) => {
                                let a =
                                    std::net::Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                                dst = Some(IpAddr::V4(a));
                            }
                            _ => {}
                        }
                    }
                    *slot = (msg.bytes, src, arrived, dst);
                    count += 1;
                }
                count
            };
            for (i, (len, src, arrived, dst)) in meta.iter().take(count).enumerate() {
                if let (Some(src), Some(data)) = (src, rx.bufs[i].get(..*len)) {
                    deliver(*arrived, *src, *dst, data);
                }
            }
            if count < BATCH {
                return; // the queue is empty
            }
        }
    });
}

fn sockaddr(a: &SockaddrStorage) -> Option<SocketAddr> {
    a.as_sockaddr_in()
        .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
        .or_else(|| {
            a.as_sockaddr_in6()
                .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
        })
}

impl CallMedia {
    /// Whether the RTP socket's link no longer matches [`MediaStream::rtp_source`].
    fn relink_due(&self, now: Instant) -> bool {
        self.stream.rtp_source(now) != self.link_target
    }
}

/// Connects the RTP socket to the one peer the stream still accepts once its latching window
/// has closed, or frees it again when a re-INVITE reopens the window. Connected, the kernel
/// drops other senders (the stream would drop them too) and sends to the peer along a route
/// found once instead of per packet (`docs/PERFORMANCE.md`, "Media per call").
///
/// Connecting a socket bound to the wildcard address also binds it to the source address of
/// the route to the peer: datagrams sent to any other local address would no longer reach it.
/// So a wildcard socket is connected only once a datagram from the peer has shown (through
/// `IP_PKTINFO`) that the peer sends to that very address; on a host where the route back
/// leaves from another address than the one the peer sends to, it stays unconnected.
fn relink(c: &mut CallMedia, now: Instant) {
    let target = c.stream.rtp_source(now);
    match target {
        Some(peer) => {
            if c.wildcard {
                let Some(&(_, dst)) = c.last_rx.as_ref().filter(|(src, _)| *src == peer) else {
                    // Nothing from the peer seen since the window closed: look again at the
                    // next tick (a comparison until then), unless nothing can be seen.
                    if !c.pktinfo {
                        c.link_target = target;
                    }
                    return;
                };
                let from = route_source(peer);
                if from != Some(dst) {
                    tracing::debug!(call = %c.call, %peer, %dst, route_from = ?from, "RTP socket left unconnected: the route to the peer leaves from another address than the one it sends to");
                    c.link_target = target;
                    stop_watching(c);
                    return;
                }
            }
            c.link_target = target;
            match c.sockets.rtp.connect(peer) {
                Ok(()) => c.linked = Some(peer),
                Err(e) => {
                    // Not fatal: sending with an address works on an unconnected socket.
                    tracing::debug!(call = %c.call, %peer, error = %e, "cannot connect the RTP socket");
                    c.linked = None;
                }
            }
            stop_watching(c);
        }
        None => {
            c.link_target = None;
            if c.linked.take().is_some()
                && let Err(e) = reopen_socket(&mut c.sockets.rtp)
            {
                tracing::error!(call = %c.call, error = %e, "cannot re-open the RTP port after a re-INVITE: hanging up");
                hang_up(c, "the RTP port could not be re-opened");
                return;
            }
            if c.wildcard && !c.pktinfo {
                c.pktinfo = watch_destination(&c.sockets.rtp, true);
            }
            c.last_rx = None;
        }
    }
}

/// Turns `IP_PKTINFO` off once the decision is made (it costs a control message a datagram).
fn stop_watching(c: &mut CallMedia) {
    if c.pktinfo && watch_destination(&c.sockets.rtp, false) {
        c.pktinfo = false;
    }
    c.last_rx = None;
}

/// Turns `IP_PKTINFO` on or off on an IPv4 socket; whether that worked.
fn watch_destination(sock: &UdpSocket, on: bool) -> bool {
    sock.local_addr().is_ok_and(|a| a.is_ipv4())
        && setsockopt(sock, sockopt::Ipv4PacketInfo, &on).is_ok()
}

/// The local address the kernel sends from to reach `peer`, found by connecting a throwaway
/// socket (no datagram is sent).
fn route_source(peer: SocketAddr) -> Option<IpAddr> {
    let any: IpAddr = match peer {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let probe = UdpSocket::bind(SocketAddr::new(any, 0)).ok()?;
    probe.connect(peer).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

/// Replaces a connected RTP socket with an unconnected one on the same port, so that packets
/// from any address reach it again (latching after a re-INVITE). Safe Rust has no way to
/// dissolve a connection (`connect` with `AF_UNSPEC`), so the socket is closed and the port
/// bound again; UDP frees a port at close, with no wait. A placeholder on a free port holds
/// the field meanwhile.
fn reopen_socket(sock: &mut UdpSocket) -> std::io::Result<()> {
    let local = sock.local_addr()?;
    let placeholder = UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
    drop(std::mem::replace(sock, placeholder));
    let fresh = UdpSocket::bind(local)?;
    fresh.set_nonblocking(true)?;
    // Without kernel timestamps the arrival time falls back to the read time.
    let _ = setsockopt(&fresh, sockopt::ReceiveTimestampns, &true);
    *sock = fresh;
    Ok(())
}

fn drain(c: &mut CallMedia, tx: &mut Outgoing) {
    loop {
        match c.stream.poll_output() {
            MediaOutput::Transmit { to, payload, rtcp } => {
                let (sock, to) = match (rtcp, c.sockets.rtcp.as_ref()) {
                    (true, Some(s)) => (s, Some(to)),
                    // RTP, or RTCP over rtcp-mux: the RTP socket, connected or not.
                    _ => (&c.sockets.rtp, Some(to).filter(|&t| c.linked != Some(t))),
                };
                tx.push(sock.as_raw_fd(), to, &payload);
                if tx.spare_packets.len() < SPARE_MAX {
                    tx.spare_packets.push(payload);
                }
            }
            MediaOutput::Event(ev) => on_event(c, ev, tx),
            MediaOutput::Timeout(t) => {
                c.deadline = t;
                return;
            }
        }
    }
}

/// The local agent said it is done: hang up, or transfer where a realtime call's fallback
/// says to.
fn agent_hung_up(c: &mut CallMedia) {
    if c.hung_up {
        return;
    }
    c.hung_up = true;
    let transfer = c
        .fallback
        .as_ref()
        .filter(|f| f.active)
        .and_then(|f| f.transfer_to.clone());
    match transfer {
        Some(target) => fallback_transfer(c, target),
        None => {
            let _ = c.commands.try_send(CallCommand::MediaHangup {
                call: c.call,
                reason: "agent finished".into(),
            });
        }
    }
}

fn on_event(c: &mut CallMedia, ev: MediaEvent, spare: &mut Outgoing) {
    let call = c.call;
    match ev {
        MediaEvent::Frame {
            caller,
            sent,
            caller_encoded,
        } => {
            if let Some((r, _)) = c.recorder.as_mut() {
                // A full recorder queue drops the frame; the recorder writes the gap as silence
                // so the timeline stays aligned.
                let _ = r.try_send_frame(&caller, &sent);
            }
            // On hold the agent pauses with the media: otherwise it would answer the hold
            // music, and what it says would pile up in the outbound queue and play, late, after
            // the resume (an echo would then lag by the length of the hold).
            if let Some(b) = c.bridge.as_mut() {
                b.on_frame(
                    Instant::now(),
                    &caller,
                    caller_encoded.as_deref(),
                    c.stream.is_sending(),
                );
            }
            spare.spare_pcm(caller);
            spare.spare_pcm(sent);
            if let Some(bytes) = caller_encoded
                && spare.bytes.len() < SPARE_MAX
            {
                // The G.711 bytes went to the bridge above; the buffer is lent to the next call.
                spare.bytes.push(bytes);
            }
        }
        MediaEvent::Dtmf(d) => {
            tracing::info!(%call, digit = %d.digit, method = ?d.method, duration_ms = d.duration_ms, "DTMF");
            c.agent.on_dtmf(d.digit.as_char());
            update(&c.table, call, |i| i.dtmf.push(d.digit.to_string()));
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
            if !c.hung_up {
                c.hung_up = true;
                let _ = c.commands.try_send(CallCommand::MediaHangup {
                    call,
                    reason: "RTP timeout".into(),
                });
            }
        }
        MediaEvent::RemoteBye => tracing::debug!(%call, "RTCP BYE from the peer"),
    }
}

fn control(c: &mut CallMedia, ctl: MediaControl) {
    let call = c.call;
    let now = Instant::now();
    match ctl {
        MediaControl::Update(n) => {
            if let Err(e) = c.stream.update(now, n) {
                tracing::warn!(%call, error = %e, "media update failed");
            }
        }
        MediaControl::InfoDtmf { content_type, body } => {
            c.stream.handle_info_dtmf(now, &content_type, &body)
        }
        MediaControl::SendDtmf {
            digits,
            duration,
            inband,
        } => {
            for d in digits {
                let sent = if inband {
                    c.stream.send_dtmf_tone(d, duration)
                } else {
                    c.stream.send_dtmf(now, d, duration)
                };
                if let Err(e) = sent {
                    tracing::warn!(%call, error = %e, "cannot send DTMF");
                }
            }
        }
        MediaControl::AgentHangup => match c.bridge.as_mut() {
            Some(b) => b.request_hangup(now),
            None => hang_up(c, "agent hung up"),
        },
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

fn bridge_action(c: &mut CallMedia, action: BridgeAction) {
    match action {
        BridgeAction::Continue => {}
        BridgeAction::HangUp => hang_up(c, "the agent hung up"),
        BridgeAction::BackendLost(reason) => {
            tracing::warn!(call = %c.call, %reason, "the AI backend is gone");
            super::metrics::Metrics::inc(&super::metrics::Metrics::global().backend_failures);
            if !c.hung_up {
                activate_fallback(c, &reason);
            }
        }
    }
}

/// Plays the fallback prompt (then hangs up or transfers), or hangs up when there is none.
fn activate_fallback(c: &mut CallMedia, why: &str) {
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
            c.stream.flush();
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

/// The call is over: final RTCP with BYE, final statistics, recording closed.
async fn finish(mut c: CallMedia) {
    let call = c.call;
    if let Some(b) = c.bridge.as_mut() {
        b.close();
        let s = b.stats();
        tracing::debug!(%call, up = s.frames_up, up_dropped = s.frames_dropped, down = s.chunks_down, dropped_bytes = s.bytes_dropped, barge_ins = s.barge_ins, "backend bridge closed");
    }
    c.stream.close(Instant::now());
    let mut tx = Outgoing::default();
    drain(&mut c, &mut tx);
    tx.send_all();
    let stats = c.stream.stats();
    update(&c.table, call, |i| i.media = Some(stats));
    if let Some((handle, join)) = c.recorder.take() {
        handle.finish();
        // Joining waits for the file to be closed: do it off the worker.
        tokio::task::spawn_blocking(move || match join.join() {
            Ok(Ok(info)) => {
                tracing::info!(%call, path = %info.path.display(), seconds = info.duration.as_secs_f32(), "recording finished")
            }
            Ok(Err(e)) => tracing::warn!(%call, error = %e, "recording could not be finished"),
            Err(_) => tracing::warn!(%call, "the recorder thread failed"),
        });
    }
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
        AgentKind::Realtime(ra) => {
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

fn update(table: &CallTable, call: CallHandle, f: impl FnOnce(&mut super::CallInfo)) {
    if let Ok(mut t) = table.lock()
        && let Some(i) = t.get_mut(&call.0)
    {
        f(i);
    }
}

fn to_tokio(base: (Instant, tokio::time::Instant), t: Instant) -> tokio::time::Instant {
    match t.checked_duration_since(base.0) {
        Some(d) => base.1 + d,
        None => base.1,
    }
}

#[cfg(test)]
mod tests {
    use super::{CallHandle, EARLY_REMOVALS, EarlyRemovals};

    #[test]
    fn a_call_removed_before_it_is_added_is_remembered_once() {
        let mut early = EarlyRemovals::default();
        let call = CallHandle(7);
        assert!(!early.take(call), "nothing noted yet");
        early.note(call);
        assert!(
            early.take(call),
            "the Add after an early Remove is recognised"
        );
        assert!(!early.take(call), "and only once");
        // Bounded: the oldest is forgotten.
        for n in 0..EARLY_REMOVALS as u64 + 1 {
            early.note(CallHandle(100 + n));
        }
        assert!(!early.take(CallHandle(100)));
        assert!(early.take(CallHandle(101)));
    }
}
