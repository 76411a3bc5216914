//! One media worker: its calls, its loop, and one service of a call.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::io::{self, Clock, Link, Outgoing, Received, RxPacket};
use super::schedule::{self, EarlyRemovals, Grid, WakeQueue};
use super::{MediaCall, PUMP_INTERVAL, RTCP_POLL, STATS_INTERVAL};
use crate::media::stream::{MediaEvent, MediaOutput, MediaStream};
use crate::media::webrtc::{WebRtcOutput, WebRtcPeer};
use crate::runtime::recorder::{RecorderHandle, RecordingInfo};
use crate::runtime::rtp::RtpSockets;
use crate::sip::CallHandle;

/// What a worker's queue carries.
pub(super) enum WorkerMsg<G: MediaCall> {
    /// A call whose media starts.
    Add(Box<Slot<G>>),
    /// A control message for a call.
    Control(CallHandle, G::Control),
    /// A call whose media ends.
    Remove(CallHandle),
}

type Recorder = (
    RecorderHandle,
    std::thread::JoinHandle<std::io::Result<RecordingInfo>>,
);

/// One call on a worker.
pub(super) struct Slot<G> {
    call: CallHandle,
    stream: Box<MediaStream>,
    sockets: RtpSockets,
    part: G,
    recorder: Option<Recorder>,
    grid: Grid,
    link: Link,
    next_stats: Instant,
    /// When a call that wants pumping is next pumped (between ticks).
    next_pump: Instant,
    next_rtcp_poll: Instant,
    /// The stream's next deadline.
    deadline: Instant,
    /// The wake-up time this call is queued under in its worker.
    wake: Instant,
    /// Its service time when it was queued (a wake-up tells service from a pump without
    /// touching the stream).
    service: Instant,
    /// A browser call's WebRTC session: every datagram of the RTP socket goes through it,
    /// and the stream's RTP goes out through it.
    webrtc: Option<Box<WebRtcPeer>>,
    /// The WebRTC session's next deadline.
    webrtc_deadline: Instant,
}

impl<G: MediaCall> Slot<G> {
    pub(super) fn new(
        call: CallHandle,
        stream: MediaStream,
        sockets: RtpSockets,
        part: G,
        recorder: Option<Recorder>,
        grid: Grid,
        now: Instant,
    ) -> Self {
        let start = stream.next_tick().unwrap_or(now);
        let link = Link::new(&sockets);
        Self {
            call,
            stream: Box::new(stream),
            sockets,
            part,
            recorder,
            grid,
            link,
            next_stats: now + STATS_INTERVAL,
            next_pump: now + PUMP_INTERVAL,
            next_rtcp_poll: now,
            deadline: start,
            wake: start,
            service: start,
            webrtc: None,
            webrtc_deadline: start,
        }
    }

    /// Makes this a browser call carried by `webrtc` (before it joins its worker).
    pub(super) fn set_webrtc(&mut self, webrtc: Option<Box<WebRtcPeer>>) {
        self.webrtc = webrtc;
    }

    /// Computes when the call next needs the worker ([`schedule::service_at`],
    /// [`schedule::next_wake`]) and notes it.
    fn reschedule(&mut self) -> Instant {
        self.service = schedule::service_at(
            &self.grid,
            self.stream.next_tick(),
            self.deadline.min(self.next_stats),
        );
        let pump = self.part.wants_pump().then_some(self.next_pump);
        self.wake = schedule::next_wake(self.service, pump);
        self.wake
    }

    fn relink_due(&self, now: Instant) -> bool {
        // A WebRTC session picks its path by ICE: its socket is never connected to the
        // stream's stand-in peer address.
        self.webrtc.is_none() && self.link.due(self.stream.rtp_source(now))
    }
}

/// A worker's calls, and when each next needs the worker: a wake-up serves only the calls
/// due, without looking at the others.
struct Calls<G> {
    slots: Vec<Option<Slot<G>>>,
    free: Vec<usize>,
    by_handle: HashMap<CallHandle, usize>,
    queue: WakeQueue,
}

impl<G: MediaCall> Calls<G> {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            by_handle: HashMap::new(),
            queue: WakeQueue::default(),
        }
    }

    /// Adds a call and schedules it.
    fn insert(&mut self, c: Slot<G>) {
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

    fn get_mut(&mut self, slot: usize) -> Option<&mut Slot<G>> {
        self.slots.get_mut(slot).and_then(Option::as_mut)
    }

    /// Removes a call (and its wake-up).
    fn remove(&mut self, call: CallHandle) -> Option<Slot<G>> {
        let slot = self.by_handle.remove(&call)?;
        self.unschedule(slot);
        let c = self.slots.get_mut(slot)?.take();
        self.free.push(slot);
        c
    }

    /// Queues the call's next wake-up.
    fn schedule(&mut self, slot: usize) {
        if let Some(c) = self.slots.get_mut(slot).and_then(Option::as_mut) {
            let at = c.reschedule();
            self.queue.insert(at, slot);
        }
    }

    /// Takes the call's wake-up out of the queue (before its deadline changes).
    fn unschedule(&mut self, slot: usize) {
        if let Some(c) = self.slots.get(slot).and_then(Option::as_ref) {
            self.queue.remove(c.wake, slot);
        }
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

/// A worker: serves its calls until every sender of its queue is gone.
pub(super) async fn run<G: MediaCall>(index: usize, mut rx: mpsc::Receiver<WorkerMsg<G>>) {
    let mut calls = Calls::new();
    let mut early = EarlyRemovals::default();
    let mut due: Vec<usize> = Vec::new();
    let mut batch = Batch::default();
    let base = (Instant::now(), tokio::time::Instant::now());
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    tracing::debug!(worker = index, "media worker started");
    loop {
        let next = calls.queue.next();
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
                        // The call ended while it was being prepared: its media never
                        // starts, and its sockets go now.
                        finish(c);
                    } else {
                        service(&mut c, Clock::now(), &mut batch);
                        calls.insert(c);
                    }
                }
                Some(WorkerMsg::Control(call, ctl)) => {
                    if let Some(slot) = calls.slot_of(call) {
                        calls.unschedule(slot);
                        if let Some(c) = calls.get_mut(slot) {
                            let clock = Clock::now();
                            c.part.control(&mut c.stream, ctl, clock.now);
                            service(c, clock, &mut batch);
                        }
                        calls.schedule(slot);
                    }
                }
                Some(WorkerMsg::Remove(call)) => match calls.remove(call) {
                    Some(c) => finish(c),
                    // Not added yet: the BYE came while the call was being prepared.
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
        calls.queue.take_due(clock.now, &mut due);
        if due.is_empty() {
            continue;
        }
        // A call that wants pumping is also woken between its ticks, only for that; it takes
        // no part in the batch's phases.
        due.retain(|&slot| match calls.get_mut(slot) {
            Some(c) if c.service > clock.now => {
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
                process(c, clock.now, mine, &batch.rx, &mut batch.tx);
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
    tracing::debug!(worker = index, "media worker stopped");
}

/// Between ticks: the call's pump and, when a reply has just arrived and nothing is playing,
/// its first packet now rather than at the next tick.
fn pump<G: MediaCall>(c: &mut Slot<G>, now: Instant, tx: &mut Outgoing) {
    c.next_pump = now + PUMP_INTERVAL;
    c.part.pump(&mut c.stream, now);
    if c.stream.send_ahead(now) {
        drain(c, now, tx);
    }
    c.part.after_ticks(&mut c.stream, now);
}

/// Serves one call on its own (a new call, a control message): reads what arrived, runs due
/// ticks and sends.
fn service<G: MediaCall>(c: &mut Slot<G>, clock: Clock, batch: &mut Batch) {
    batch.rx.clear();
    receive(c, 0, clock, &mut batch.rx);
    process(c, clock.now, &batch.rx.packets, &batch.rx, &mut batch.tx);
    batch.rx.clear();
    batch.tx.send_all();
    if c.relink_due(clock.now) {
        relink(c, clock.now);
    }
}

/// A batch's first phase for one call: reads its RTP socket, and its RTCP socket when due.
fn receive<G: MediaCall>(c: &mut Slot<G>, slot: usize, clock: Clock, rx: &mut Received) {
    let rtcp_due = clock.now >= c.next_rtcp_poll;
    if rtcp_due {
        c.next_rtcp_poll = clock.now + RTCP_POLL;
    }
    io::receive(&c.sockets, &mut c.link, rtcp_due, slot, clock, rx);
}

/// A batch's second phase for one call: hands it what was read, runs due ticks (the call's
/// part answering each frame before its packet leaves), and queues what to send.
fn process<G: MediaCall>(
    c: &mut Slot<G>,
    now: Instant,
    packets: &[RxPacket],
    rx: &Received,
    tx: &mut Outgoing,
) {
    c.next_pump = now + PUMP_INTERVAL;
    for p in packets {
        let Some(d) = rx.payload(p) else {
            continue;
        };
        if let Some(w) = c.webrtc.as_mut() {
            w.handle_datagram(p.arrived, p.src, d);
            webrtc_drain(c, p.arrived, tx);
            continue;
        }
        if p.rtcp {
            c.stream.handle_rtcp(p.arrived, p.src, d);
        } else {
            c.stream.handle_rtp(p.arrived, p.src, d);
        }
    }
    if let Some(w) = c.webrtc.as_mut()
        && now >= c.webrtc_deadline
    {
        w.handle_timeout(now);
        webrtc_drain(c, now, tx);
    }
    c.part.pump(&mut c.stream, now);
    if now >= c.deadline {
        tx.lend(&mut c.stream);
    }
    // Tick by tick, the part answering each frame before the next overdue tick sends: after
    // a late wake-up a local agent's audio for that tick is then sent, not silence. (On time,
    // one tick is due and this is one drain.)
    while c.part.tick(&mut c.stream, &mut tx.agent_out, now) {
        if c.stream.next_tick().is_some_and(|t| t <= now) {
            drain(c, now, tx);
        }
    }
    c.stream.handle_timeout(now);
    drain(c, now, tx);
    c.part.after_ticks(&mut c.stream, now);
    if now >= c.next_stats {
        c.next_stats = now + STATS_INTERVAL;
        c.part.stats(c.stream.stats());
    }
}

/// Drains the stream's output: datagrams to the batch, frames to the recorder and the part,
/// other events to the part.
fn drain<G: MediaCall>(c: &mut Slot<G>, now: Instant, tx: &mut Outgoing) {
    loop {
        match c.stream.poll_output() {
            MediaOutput::Transmit { to, payload, rtcp } => match c.webrtc.as_mut() {
                // The stream's RTP goes through DTLS-SRTP; its RTCP stays home (the WebRTC
                // session sends its own reports).
                Some(w) => {
                    if !rtcp {
                        w.send_rtp(now, &payload);
                    }
                    c.stream.recycle_packet(payload);
                }
                None => {
                    let (fd, to) = c.link.route(&c.sockets, rtcp, to);
                    tx.push(fd, to, payload);
                }
            },
            MediaOutput::Event(MediaEvent::Frame {
                caller,
                sent,
                caller_encoded,
            }) => {
                if let Some((r, _)) = c.recorder.as_mut() {
                    // A full recorder queue drops the frame; the recorder writes the gap as
                    // silence so the timeline stays aligned.
                    let _ = r.try_send_frame(&caller, &sent);
                }
                let sending = c.stream.is_sending();
                c.part.on_frame(super::TickFrame {
                    now,
                    caller: &caller,
                    sent: &sent,
                    encoded: caller_encoded.as_deref(),
                    sending,
                    clock: &super::Monotonic,
                });
                tx.spare_pcm(caller);
                tx.spare_pcm(sent);
                if let Some(bytes) = caller_encoded {
                    // The part has seen the bytes; the buffer is lent to the next call.
                    tx.spare_bytes(bytes);
                }
            }
            MediaOutput::Event(ev) => c.part.on_event(&mut c.stream, ev, now),
            MediaOutput::Timeout(t) => {
                c.deadline = t;
                if c.webrtc.is_some() {
                    webrtc_drain(c, now, tx);
                }
                return;
            }
        }
    }
}

/// Moves a browser call's WebRTC output on: datagrams to the batch (from the RTP socket),
/// decrypted RTP to the stream, the end of the session to the call layer. Folds the
/// session's deadline into the call's.
fn webrtc_drain<G: MediaCall>(c: &mut Slot<G>, now: Instant, tx: &mut Outgoing) {
    let Some(w) = c.webrtc.as_mut() else {
        return;
    };
    loop {
        match w.poll_output() {
            WebRtcOutput::Transmit { to, payload } => {
                tx.push(
                    std::os::fd::AsRawFd::as_raw_fd(&c.sockets.rtp),
                    Some(to),
                    payload,
                );
            }
            WebRtcOutput::Rtp(bytes) => c.stream.handle_rtp(now, w.media_source(), &bytes),
            WebRtcOutput::Connected => {
                tracing::info!(call = %c.call, "WebRTC media connected (ICE, DTLS-SRTP)");
            }
            WebRtcOutput::Disconnected => {
                tracing::info!(call = %c.call, "the browser's WebRTC session ended");
                c.part.failed("the browser's WebRTC session ended");
            }
            WebRtcOutput::Timeout(t) => {
                c.webrtc_deadline = t;
                c.deadline = c.deadline.min(t);
                return;
            }
        }
    }
}

/// Connects or frees the call's RTP socket (see [`io::relink`]).
fn relink<G: MediaCall>(c: &mut Slot<G>, now: Instant) {
    let source = c.stream.rtp_source(now);
    if let Err(e) = io::relink(c.call, &mut c.sockets, &mut c.link, source) {
        tracing::error!(call = %c.call, error = %e, "cannot re-open the RTP port after a re-INVITE: hanging up");
        c.part.failed("the RTP port could not be re-opened");
    }
}

/// The call is over: final RTCP with BYE, final statistics, recording closed, sockets freed.
fn finish<G: MediaCall>(mut c: Slot<G>) {
    let call = c.call;
    let now = Instant::now();
    c.part.close(now);
    c.stream.close(now);
    if let Some(w) = c.webrtc.as_mut() {
        w.close();
    }
    let mut tx = Outgoing::default();
    drain(&mut c, now, &mut tx);
    webrtc_drain(&mut c, now, &mut tx);
    tx.send_all();
    c.part.stats(c.stream.stats());
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

fn to_tokio(base: (Instant, tokio::time::Instant), t: Instant) -> tokio::time::Instant {
    match t.checked_duration_since(base.0) {
        Some(d) => base.1 + d,
        None => base.1,
    }
}
