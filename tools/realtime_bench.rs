//! Load tool for the realtime (speech-to-speech) path: a `voxline run` whose realtime agent
//! talks to the mock Realtime server (`voxline_mock_realtime`, started in this
//! process), and hand-made SIP + RTP callers on 127.0.0.1.
//!
//! ```sh
//! cargo build --release
//! target/release/voxline-realtime-bench --mode latency --calls 5 --turns 10
//! target/release/voxline-realtime-bench --mode cpu --calls 200 --seconds 20
//! ```
//!
//! * `--mode latency`: the calls run one after another; in each the caller speaks (a loud
//!   μ-law tone) for 400 ms, then sends silence until the mock's reply has played. Per turn:
//!   the first RTP packet of the reply at the caller (kernel receive timestamp) minus the send
//!   of the silence frame that completes the mock's VAD window (on schedule, that is the last
//!   loud packet's send + the window; any lateness of this tool is left out). Also prints what
//!   voxline itself recorded for those turns (`turn_latencies` in `data_dir/voxline.db`), a
//!   decomposition from the wire (the phase of voxline's frame ticks against the caller's
//!   packets), and the backend path alone (voxline's realtime client against the mock in this
//!   process, no SIP or RTP).
//! * `--mode cpu`: `--calls` concurrent calls, each streaming 20 ms PCMU frames (1 s of
//!   speech, 3 s of silence, in a loop); the mock answers every turn with 2 s of audio paced
//!   in real time in 20 ms deltas. Samples voxline's CPU (utime + stime from /proc/PID/stat)
//!   over `--seconds` and its RSS.
//!
//! * `--backend cascaded` (cpu mode): the agent is a cascaded one against the local mocks of
//!   `voxline_mock_cascaded` (Deepgram STT, chat completions, Deepgram TTS with its audio paced
//!   in real time; `--cascaded-tts deepgram-ws` for its WebSocket): the same callers, one
//!   reply of about 2 s a turn.
//!
//! Bounded: 127.0.0.1 only, at most [`MAX_CALLS`] calls, [`MAX_TURNS`] turns a call,
//! [`MAX_SECONDS`] of sampling and [`RUN_LIMIT`] in all (a watchdog then kills the voxline it
//! started and exits). The only process it starts is that voxline, stopped through its
//! `Child` handle.

use std::io::{IoSliceMut, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use voxline::agent::backend::{AudioChunk, AudioFormat, BackendControl, BackendEvent, CallContext};
use voxline::agent::realtime::{ApiKey, RealtimeConfig, TurnDetection, connect};
use voxline::records::{RecordReader, TurnLatency};
use voxline_mock_realtime::{MockConfig, MockServer, PCM_RATE, tone, ulaw_encode};

/// Most calls a run may place.
const MAX_CALLS: usize = 300;
/// Most turns a latency call may have.
const MAX_TURNS: usize = 100;
/// Longest CPU sampling window.
const MAX_SECONDS: u64 = 120;
/// The whole run's limit: the watchdog kills voxline and exits after this.
const RUN_LIMIT: Duration = Duration::from_secs(15 * 60);
/// The environment variable voxline reads the mock's key from.
const KEY_ENV: &str = "VOXLINE_BENCH_REALTIME_KEY";
/// The key the mock expects.
const KEY: &str = "sk-bench-mock";
/// Samples (and μ-law bytes) in one 20 ms frame.
const FRAME: usize = 160;
/// The caller's packet interval.
const PTIME: Duration = Duration::from_millis(20);
/// μ-law silence.
const ULAW_SILENCE: u8 = 0xFF;
/// Latency mode: the caller speaks this many frames a turn (400 ms).
const SPEECH_FRAMES: usize = 20;
/// Latency mode: the reply (ms).
const LATENCY_REPLY_MS: u64 = 200;
/// Latency mode: a turn without a reply within this long after the speech is a miss.
const REPLY_TIMEOUT: Duration = Duration::from_secs(3);
/// CPU mode: one cycle of the caller's loop (4 s), the first [`CPU_SPEECH_FRAMES`] loud.
const CPU_CYCLE_FRAMES: u64 = 200;
/// CPU mode: speech frames in a cycle (1 s).
const CPU_SPEECH_FRAMES: u64 = 50;
/// CPU mode: the reply (ms), paced in real time.
const CPU_REPLY_MS: u64 = 2000;
/// CPU mode: phase groups the callers are spread over within a 20 ms frame.
const GROUPS: u32 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The realtime agent against the Realtime mock.
    Realtime,
    /// A cascaded agent against the STT, LLM and TTS mocks (cpu mode only).
    Cascaded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Per-turn overhead against the mock (calls one after another).
    Latency,
    /// CPU and memory per concurrent call.
    Cpu,
}

#[derive(Debug, Parser)]
#[command(
    name = "voxline-realtime-bench",
    about = "Latency and CPU of voxline's realtime agent path against the local mock"
)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value = "latency")]
    mode: Mode,
    /// Which AI backend the agent uses.
    #[arg(long, value_enum, default_value = "realtime")]
    backend: Backend,
    /// Calls: one after another (latency) or concurrent (cpu); at most 300.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Turns per call (latency mode), at most 100.
    #[arg(long, default_value_t = 5)]
    turns: usize,
    /// CPU sampling window in seconds (cpu mode), at most 120.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The mock's VAD silence window (`vad_silence_ms` of the agent).
    #[arg(long, default_value_t = 300)]
    silence_ms: u64,
    /// `[media] jitter_min_ms` for voxline (default: voxline's own default, 20).
    #[arg(long)]
    jitter_min_ms: Option<u32>,
    /// The cascaded agent's TTS: `deepgram` (REST) or `deepgram-ws` (its WebSocket, one
    /// socket per call).
    #[arg(long, default_value = "deepgram")]
    cascaded_tts: String,
    /// The voxline binary (default: `voxline` next to this tool).
    #[arg(long)]
    voxline: Option<PathBuf>,
    /// Print every turn (latency mode).
    #[arg(long)]
    verbose: bool,
    /// Keep the temporary directory (config, data, voxline's log).
    #[arg(long)]
    keep: bool,
    /// Turn the agent's voice chain off (`[agent.dsp] enabled = false`): G.711 passthrough.
    #[arg(long)]
    no_dsp: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.calls == 0 || args.calls > MAX_CALLS {
        bail!("--calls must be 1..={MAX_CALLS}");
    }
    if args.turns == 0 || args.turns > MAX_TURNS {
        bail!("--turns must be 1..={MAX_TURNS}");
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        bail!("--seconds must be 1..={MAX_SECONDS}");
    }
    if !(100..=2000).contains(&args.silence_ms) || args.silence_ms % 20 != 0 {
        bail!("--silence-ms must be a multiple of 20 in 100..=2000");
    }
    let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
    {
        let child = child.clone();
        thread::spawn(move || {
            thread::sleep(RUN_LIMIT);
            eprintln!("run limit of {RUN_LIMIT:?} reached: stopping voxline and exiting");
            if let Some(c) = lock(&child).as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            std::process::exit(2);
        });
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (reply_ms, pace) = match args.mode {
        Mode::Latency => (LATENCY_REPLY_MS, false),
        Mode::Cpu => (CPU_REPLY_MS, true),
    };
    let mock_cfg = MockConfig {
        api_key: KEY.to_owned(),
        reply_pcm24k: tone(440.0, 8000.0, reply_ms, PCM_RATE),
        reply_text: "ok".to_owned(),
        chunk_ms: 20,
        pace,
        ..MockConfig::default()
    };
    if args.backend == Backend::Cascaded && args.mode != Mode::Cpu {
        bail!("--backend cascaded goes with --mode cpu (its latency is voxline-cascaded-bench's)");
    }
    let mock = rt.block_on(MockServer::start(mock_cfg))?;
    let providers = rt.block_on(voxline_mock_cascaded::MockProviders::start(
        voxline_mock_cascaded::ProvidersConfig {
            api_key: KEY.to_owned(),
            tts: voxline_mock_cascaded::TtsMockConfig {
                // "You said: utterance N. What else can I do?": about 2 s, paced in real time.
                ms_per_char: 45,
                chunk_delay: PTIME,
                ..Default::default()
            },
            ..Default::default()
        },
    ))?;
    let bin = match &args.voxline {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("voxline"),
    };
    let agent = match args.backend {
        Backend::Realtime => format!(
            r#"kind = "realtime"

[agent.realtime]
url = "{}"
api_key_env = "{KEY_ENV}"
vad_silence_ms = {}
transcription_model = ""
noise_reduction = "none"
"#,
            mock.url(),
            args.silence_ms
        ),
        Backend::Cascaded => format!(
            r#"kind = "cascaded"

[agent.stt]
url = "{}"
api_key_env = "{KEY_ENV}"

[agent.llm]
url = "{}"
api_key_env = "{KEY_ENV}"

[agent.tts]
provider = "deepgram"
url = "{}"
api_key_env = "{KEY_ENV}"
"#,
            providers.stt_url(),
            providers.openai_url(),
            match args.cascaded_tts.as_str() {
                "deepgram" => providers.deepgram_url(),
                "deepgram-ws" => providers.tts_socket_url(),
                other => bail!("--cascaded-tts {other}: deepgram or deepgram-ws"),
            }
        ),
    };
    let vox = Voxline::start(&bin, &args, &agent, child)?;
    let result = match args.mode {
        Mode::Latency => latency(&args, &vox, &rt, &mock),
        Mode::Cpu => cpu(&args, &vox),
    };
    if let Err(e) = &result {
        eprintln!("error: {e:#}");
        eprintln!("voxline's log ({}):", vox.log.display());
        if let Ok(log) = std::fs::read_to_string(&vox.log) {
            let n = log.lines().count();
            for l in log.lines().skip(n.saturating_sub(30)) {
                eprintln!("  {l}");
            }
        }
    }
    vox.stop(args.keep);
    drop(mock);
    drop(providers);
    result
}

// ---------------------------------------------------------------------------------------
// Latency mode.

/// One caller turn as seen from the wire.
#[derive(Debug, Clone, Copy)]
struct TurnSample {
    /// The call (its index).
    call: usize,
    /// First reply packet at the caller minus the send of the frame that completes the
    /// silence window.
    overhead: Duration,
    /// Where in voxline's 20 ms tick the caller's packets land: from a packet's arrival to
    /// voxline's next tick (from the arrival times of voxline's own packets).
    phase: Duration,
}

fn latency(
    args: &Args,
    vox: &Voxline,
    rt: &tokio::runtime::Runtime,
    mock: &MockServer,
) -> anyhow::Result<()> {
    let speech = speech_frames();
    let mut samples = Vec::new();
    let mut missed = 0usize;
    let mut late_max = Duration::ZERO;
    let mut slip_max = Duration::ZERO;
    let load0 = (
        machine_busy_ticks()?,
        cpu_ticks(vox.pid)?,
        self_ticks()?,
        Instant::now(),
    );
    for call in 0..args.calls {
        let mut caller = Caller::new()?;
        let mut sip = SipCall::invite(vox.sip, caller.port()?, call)?;
        caller.to = sip.media;
        // Callers' packets fall anywhere in voxline's 20 ms tick: spread the calls' phases.
        thread::sleep(
            PTIME * u32::try_from(call).unwrap_or(0) / u32::try_from(args.calls).unwrap_or(1),
        );
        // One second of silence first: latching, and the jitter buffer settles.
        for _ in 0..50 {
            caller.send_frame(&[ULAW_SILENCE; FRAME])?;
        }
        let window = u32::try_from(args.silence_ms / 20).unwrap_or(u32::MAX);
        for turn in 0..args.turns {
            let mut last_loud = Instant::now();
            for f in speech.iter().take(SPEECH_FRAMES) {
                last_loud = caller.send_frame(f)?;
            }
            caller.agent.clear();
            let mut sent_after = 0u32;
            let mut window_end = last_loud;
            let reply = loop {
                let t = caller.send_frame(&[ULAW_SILENCE; FRAME])?;
                sent_after += 1;
                if sent_after == window {
                    // The silence window is complete once this frame is in.
                    window_end = t;
                }
                let first = caller.agent.iter().copied().find(|t| *t > last_loud);
                let quiet = caller
                    .agent
                    .last()
                    .is_some_and(|t| t.elapsed() > Duration::from_millis(100));
                if let Some(first) = first
                    && quiet
                {
                    break Some(first);
                }
                if sent_after > window && last_loud.elapsed() > REPLY_TIMEOUT {
                    break None;
                }
            };
            let Some(first) = reply else {
                missed += 1;
                eprintln!("call {call} turn {turn}: no reply");
                continue;
            };
            // Measured from the send of the frame that completes the window: equal to the last
            // loud packet's send + the window when the caller is on schedule, and free of this
            // tool's own scheduling delays when it is not.
            let overhead = first.saturating_duration_since(window_end);
            let slip = window_end
                .saturating_duration_since(last_loud)
                .saturating_sub(Duration::from_millis(args.silence_ms));
            slip_max = slip_max.max(slip);
            let phase = caller.tick_phase();
            if args.verbose {
                println!(
                    "call {call} turn {turn}: overhead {:.1} ms, tick phase {:.1} ms",
                    ms(overhead),
                    ms(phase)
                );
            }
            samples.push(TurnSample {
                call,
                overhead,
                phase,
            });
        }
        late_max = late_max.max(caller.late_max);
        let code = sip.bye()?;
        if code != 200 {
            eprintln!("call {call}: BYE answered {code}");
        }
    }
    let load1 = (
        machine_busy_ticks()?,
        cpu_ticks(vox.pid)?,
        self_ticks()?,
        Instant::now(),
    );
    let (tck, wall) = (clock_ticks(), (load1.3 - load0.3).as_secs_f64());
    let cores = |a: u64, b: u64| (b - a) as f64 / tck / wall * 100.0;
    let (vox_pct, self_pct) = (cores(load0.1, load1.1), cores(load0.2, load1.2));
    let others_pct = (cores(load0.0, load1.0) - vox_pct - self_pct).max(0.0);
    // voxline's own figures, from its call records, matched to the turns by SIP Call-ID and
    // turn order.
    let records = vox.wait_records(args.calls, Duration::from_secs(10))?;
    let mut recorded: Vec<Option<u64>> = Vec::with_capacity(samples.len());
    let mut all_turns = Vec::new();
    for call in 0..args.calls {
        let id = SipCall::call_id_of(call);
        let turns: Vec<TurnLatency> = records
            .iter()
            .find(|(c, _)| *c == id)
            .map(|(_, t)| {
                t.iter()
                    .copied()
                    .filter(|t| t.first_rtp_out_ms.is_some())
                    .collect()
            })
            .unwrap_or_default();
        let ours = samples.iter().filter(|s| s.call == call).count();
        if turns.len() == ours {
            recorded.extend(turns.iter().map(TurnLatency::response_latency_ms));
        } else {
            eprintln!(
                "call {call}: voxline recorded {} answered turns, the caller saw {ours}: not matched",
                turns.len()
            );
            recorded.extend(std::iter::repeat_n(None, ours));
        }
        all_turns.extend(turns);
    }
    let probe = rt.block_on(backend_probe(mock, args.silence_ms, 20))?;

    println!();
    println!(
        "realtime latency: {} calls x {} turns, one call at a time; mock VAD silence window {} ms, reply {} ms (all at once, 20 ms deltas); jitter_min_ms {}",
        args.calls,
        args.turns,
        args.silence_ms,
        LATENCY_REPLY_MS,
        args.jitter_min_ms
            .map_or("20 (default)".to_owned(), |j| j.to_string())
    );
    println!(
        "turns measured {}, missed {missed}; caller send lateness max {:.2} ms (window-completing frame: {:.2} ms)",
        samples.len(),
        ms(late_max),
        ms(slip_max)
    );
    println!(
        "CPU during the calls ({wall:.0} s): voxline {vox_pct:.1} %, this tool {self_pct:.1} %, everything else {others_pct:.1} % of one core"
    );
    println!();
    println!(
        "{:<60} {:>4} {:>8} {:>8} {:>8}",
        "figure (ms)", "n", "median", "p95", "max"
    );
    let over: Vec<f64> = samples.iter().map(|s| ms(s.overhead)).collect();
    row(
        "OVERHEAD: speech end + window -> first reply RTP at caller",
        &over,
    );
    // Per turn: overhead = inbound + response_latency_ms, since voxline counts the speech
    // end from the instant it handed the window-completing frame to the backend.
    let matched: Vec<(&TurnSample, f64)> = samples
        .iter()
        .zip(&recorded)
        .filter_map(|(s, r)| r.map(|r| (s, r as f64)))
        .collect();
    let inbound: Vec<f64> = matched.iter().map(|(s, r)| ms(s.overhead) - r).collect();
    row(
        "  inbound: packet arrival -> frame handed to the backend",
        &inbound,
    );
    let phase: Vec<f64> = matched.iter().map(|(s, _)| ms(s.phase)).collect();
    row(
        "    wait for voxline's next tick (sockets read at ticks)",
        &phase,
    );
    let hold: Vec<f64> = matched
        .iter()
        .map(|(s, r)| ms(s.overhead) - r - ms(s.phase))
        .collect();
    row("    jitter-buffer hold", &hold);
    let outbound: Vec<f64> = matched.iter().map(|(_, r)| *r).collect();
    row(
        "  outbound: frame handed -> first reply RTP sent",
        &outbound,
    );
    row(
        "    backend path alone (client+WS+mock, in-process probe)",
        &probe,
    );
    let resp: Vec<f64> = all_turns
        .iter()
        .filter_map(TurnLatency::response_latency_ms)
        .map(|v| v as f64)
        .collect();
    row("voxline record: response_latency_ms", &resp);
    let back: Vec<f64> = all_turns
        .iter()
        .filter_map(TurnLatency::backend_latency_ms)
        .map(|v| v as f64)
        .collect();
    row("voxline record: backend_latency_ms", &back);
    println!();
    println!("jitter-buffer hold in 20 ms ticks: {}", histogram(&hold));
    println!("outbound in 20 ms ticks: {}", histogram(&outbound));
    Ok(())
}

/// How many of `rest` round to 1, 2, 3… ticks of 20 ms.
fn histogram(rest: &[f64]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for r in rest {
        *counts.entry((r / 20.0).round() as i64).or_insert(0usize) += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} tick(s): {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The backend path alone: voxline's realtime client (in this process) against the mock,
/// fed 20 ms PCMU frames in real time: from handing over the frame that completes the
/// silence window to the first agent audio event, in ms.
async fn backend_probe(
    mock: &MockServer,
    silence_ms: u64,
    turns: usize,
) -> anyhow::Result<Vec<f64>> {
    let cfg = RealtimeConfig {
        url: mock.url(),
        api_key: Some(ApiKey::new(KEY)),
        turn_detection: Some(TurnDetection::ServerVad {
            threshold: None,
            prefix_padding_ms: None,
            silence_duration_ms: Some(u32::try_from(silence_ms)?),
            create_response: None,
            interrupt_response: None,
        }),
        ..RealtimeConfig::default()
    };
    let ctx = CallContext {
        caller: "bench".into(),
        called: "probe".into(),
        direction: "inbound".into(),
        variables: Default::default(),
        memory: String::new(),
        call_format: AudioFormat::Pcmu8k,
        tools: Vec::new(),
        history: Vec::new(),
    };
    let mut h = connect(cfg, ctx).await?;
    let speech = speech_frames();
    let window = usize::try_from(silence_ms / 20)?;
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(PTIME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..turns {
        // Like a call: a frame every 20 ms whatever happens, events handled as they come.
        let mut frames: Vec<Vec<u8>> = speech.iter().take(SPEECH_FRAMES).cloned().collect();
        frames.extend(std::iter::repeat_n(vec![ULAW_SILENCE; FRAME], window + 25));
        let mut frames = frames.into_iter().enumerate();
        let (mut window_end, mut first) = (None, None);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let Some((i, f)) = frames.next() else { break };
                    let chunk = AudioChunk { format: AudioFormat::Pcmu8k, data: Bytes::from(f) };
                    h.control
                        .try_send(BackendControl::Audio(chunk))
                        .map_err(|_| anyhow!("probe: control queue full"))?;
                    if i + 1 == SPEECH_FRAMES + window {
                        window_end = Some(Instant::now());
                    }
                }
                ev = h.events.recv() => match ev {
                    Some(BackendEvent::Audio(_)) if window_end.is_some() && first.is_none() => {
                        first = Some(Instant::now());
                    }
                    Some(_) => {}
                    None => bail!("probe: the backend closed"),
                },
            }
        }
        match (window_end, first) {
            (Some(a), Some(b)) => out.push(ms(b.saturating_duration_since(a))),
            _ => bail!("probe: no reply from the mock"),
        }
    }
    let _ = h.control.try_send(BackendControl::Close);
    Ok(out)
}

/// The latency-mode caller: one RTP socket, packets sent on an absolute 20 ms schedule,
/// voxline's packets received (with kernel timestamps) while waiting.
struct Caller {
    sock: UdpSocket,
    to: SocketAddr,
    start: Instant,
    k: u32,
    seq: u16,
    ts: u32,
    /// Arrival of every packet carrying agent audio since the last `clear`.
    agent: Vec<Instant>,
    /// Arrival of voxline's last 50 packets.
    ticks: std::collections::VecDeque<Instant>,
    late_max: Duration,
    buf: Vec<u8>,
}

impl Caller {
    fn new() -> anyhow::Result<Caller> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        setsockopt(&sock, sockopt::ReceiveTimestampns, &true)?;
        sock.set_nonblocking(true)?;
        Ok(Caller {
            sock,
            to: "127.0.0.1:9".parse()?,
            start: Instant::now(),
            k: 0,
            seq: 1000,
            ts: 160_000,
            agent: Vec::new(),
            ticks: std::collections::VecDeque::new(),
            late_max: Duration::ZERO,
            buf: vec![0; 2048],
        })
    }

    fn port(&self) -> anyhow::Result<u16> {
        Ok(self.sock.local_addr()?.port())
    }

    /// Waits for frame `k`'s slot (receiving meanwhile), sends it; the send instant.
    fn send_frame(&mut self, payload: &[u8]) -> anyhow::Result<Instant> {
        if self.k == 0 {
            self.start = Instant::now();
        }
        let due = self.start + PTIME * self.k;
        // Non-blocking reads between short sleeps: a socket read timeout would wake in whole
        // jiffies and make the sends late (and jittery); arrival times come from the kernel
        // timestamps, so polling every millisecond loses no accuracy.
        loop {
            loop {
                match recv_stamped(&self.sock, &mut self.buf) {
                    Ok((n, at)) => {
                        let pkt = self.buf.get(..n).unwrap_or_default();
                        if let Some((pt, payload)) = rtp_payload(pkt) {
                            self.ticks.push_back(at);
                            if self.ticks.len() > 50 {
                                self.ticks.pop_front();
                            }
                            if pt == 0 && is_agent_audio(payload) {
                                self.agent.push(at);
                            }
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let left = due.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            thread::sleep(left.min(Duration::from_millis(1)));
        }
        let pkt = rtp_packet(self.seq, self.ts, 0x5EED_0001, self.k == 0, payload);
        let now = Instant::now();
        self.late_max = self.late_max.max(now.saturating_duration_since(due));
        self.sock.send_to(&pkt, self.to)?;
        self.k += 1;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME as u32);
        Ok(now)
    }

    /// From a caller packet's arrival at voxline to voxline's next frame tick: the median of
    /// (arrival of voxline's packet - our schedule) mod 20 ms over the recent packets. Our
    /// packet k is sent at `start + 20 ms × k`; loopback delivery takes microseconds.
    fn tick_phase(&self) -> Duration {
        let mut ph: Vec<u128> = self
            .ticks
            .iter()
            .map(|t| t.saturating_duration_since(self.start).as_nanos() % PTIME.as_nanos())
            .collect();
        ph.sort_unstable();
        let mid = ph.get(ph.len() / 2).copied().unwrap_or(0);
        Duration::from_nanos(u64::try_from(mid).unwrap_or(0))
    }
}

// ---------------------------------------------------------------------------------------
// CPU mode.

/// One streaming caller in cpu mode.
struct Streamer {
    sock: UdpSocket,
    to: SocketAddr,
    sip: SipCall,
    k: u64,
    offset: u64,
    seq: u16,
    ts: u32,
    ssrc: u32,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    agent: AtomicU64,
    late_max_us: AtomicU64,
}

fn cpu(args: &Args, vox: &Voxline) -> anyhow::Result<()> {
    let pid = vox.pid;
    let tck = clock_ticks();
    let idle_rss = rss_kib(pid)?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<Streamer>();
    let streamer = {
        let (counters, stop) = (counters.clone(), stop.clone());
        thread::spawn(move || stream_loop(rx, &counters, &stop))
    };
    let setup_start = Instant::now();
    for i in 0..args.calls {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let sip = SipCall::invite(vox.sip, sock.local_addr()?.port(), i)
            .with_context(|| format!("call {i}"))?;
        sock.set_nonblocking(true)?;
        let offset = (i as u64 * 37) % CPU_CYCLE_FRAMES;
        let s = Streamer {
            sock,
            to: sip.media,
            sip,
            k: 0,
            offset,
            seq: 1,
            ts: 0,
            ssrc: 0x5EED_0000 + i as u32,
        };
        tx.send(s)
            .map_err(|_| anyhow!("the streaming thread stopped"))?;
    }
    let setup = setup_start.elapsed();
    // Every call through at least one whole cycle (a turn and its reply) before sampling.
    thread::sleep(Duration::from_secs(5));
    let active1 = vox.active_calls()?;
    let (c1, t1) = (cpu_ticks(pid)?, Instant::now());
    let (s1, a1) = (self_ticks()?, counters.agent.load(Ordering::Relaxed));
    let m1 = machine_busy_ticks()?;
    let r1 = counters.received.load(Ordering::Relaxed);
    thread::sleep(Duration::from_secs(args.seconds));
    let (c2, t2) = (cpu_ticks(pid)?, Instant::now());
    let (s2, a2) = (self_ticks()?, counters.agent.load(Ordering::Relaxed));
    let m2 = machine_busy_ticks()?;
    let r2 = counters.received.load(Ordering::Relaxed);
    let active2 = vox.active_calls()?;
    let rss = rss_kib(pid)?;
    stop.store(true, Ordering::Relaxed);
    let mut streams = streamer
        .join()
        .map_err(|_| anyhow!("the streaming thread panicked"))?;
    let mut bye_fail = 0;
    for s in &mut streams {
        if !matches!(s.sip.bye(), Ok(200)) {
            bye_fail += 1;
        }
    }

    let wall = (t2 - t1).as_secs_f64();
    let vox_cores = (c2 - c1) as f64 / tck / wall;
    let self_cores = (s2 - s1) as f64 / tck / wall;
    let others = ((m2 - m1) as f64 / tck / wall - vox_cores - self_cores).max(0.0);
    let calls = (active1 + active2) as f64 / 2.0;
    let per_call_pkts = (r2 - r1) as f64 / calls / wall;
    let agent_share = (a2 - a1) as f64 / (r2 - r1).max(1) as f64;
    println!();
    println!(
        "{:?} CPU: {} concurrent PCMU calls (set up in {:.1} s), sampled over {:.1} s; caller loop 1 s speech + 3 s silence, mock reply {} ms paced in 20 ms deltas, VAD window {} ms",
        args.backend,
        args.calls,
        setup.as_secs_f64(),
        wall,
        CPU_REPLY_MS,
        args.silence_ms
    );
    println!(
        "active calls (voxline /health): {active1} at start, {active2} at end; BYE failures: {bye_fail}"
    );
    println!(
        "RTP from voxline per call: {per_call_pkts:.1} packets/s, {:.0} % of them agent audio; caller send lateness max {:.1} ms",
        agent_share * 100.0,
        counters.late_max_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    println!(
        "voxline CPU: {:.1} % of one core -> {:.3} % of one core per call",
        vox_cores * 100.0,
        vox_cores * 100.0 / calls
    );
    println!(
        "voxline RSS: {idle_rss} KiB idle -> {rss} KiB -> {:.1} KiB per call",
        (rss as f64 - idle_rss as f64) / calls
    );
    println!(
        "this tool (mock server + callers): {:.1} % of one core; everything else on the machine: {:.1} % of one core (of {} cores)",
        self_cores * 100.0,
        others * 100.0,
        thread::available_parallelism().map_or(1, |n| n.get())
    );
    Ok(())
}

/// Sends every call's frames on its own 20 ms schedule (calls spread over [`GROUPS`] phase
/// groups) and drains what voxline sends; returns the calls when told to stop.
fn stream_loop(
    rx: mpsc::Receiver<Streamer>,
    counters: &Counters,
    stop: &AtomicBool,
) -> Vec<Streamer> {
    let speech = speech_frames();
    let silence = [ULAW_SILENCE; FRAME];
    let mut groups: Vec<Vec<Streamer>> = (0..GROUPS).map(|_| Vec::new()).collect();
    let step = PTIME / GROUPS;
    let start = Instant::now();
    let mut n: u32 = 0;
    let mut added = 0usize;
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        let due = start + step * n;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        } else {
            let late = u64::try_from((now - due).as_micros()).unwrap_or(u64::MAX);
            counters.late_max_us.fetch_max(late, Ordering::Relaxed);
        }
        let g = (n % GROUPS) as usize;
        if g == 0 {
            while let Ok(s) = rx.try_recv() {
                if let Some(group) = groups.get_mut(added % GROUPS as usize) {
                    group.push(s);
                }
                added += 1;
            }
        }
        if let Some(group) = groups.get_mut(g) {
            for s in group.iter_mut() {
                let pos = (s.k + s.offset) % CPU_CYCLE_FRAMES;
                let payload: &[u8] = if pos < CPU_SPEECH_FRAMES {
                    speech
                        .get(pos as usize % speech.len())
                        .map_or(&silence[..], |f| &f[..])
                } else {
                    &silence
                };
                let pkt = rtp_packet(s.seq, s.ts, s.ssrc, s.k == 0, payload);
                if s.sock.send_to(&pkt, s.to).is_ok() {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                s.k += 1;
                s.seq = s.seq.wrapping_add(1);
                s.ts = s.ts.wrapping_add(FRAME as u32);
                while let Ok(len) = s.sock.recv(&mut buf) {
                    if let Some((pt, p)) = rtp_payload(buf.get(..len).unwrap_or_default()) {
                        counters.received.fetch_add(1, Ordering::Relaxed);
                        if pt == 0 && is_agent_audio(p) {
                            counters.agent.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
        n = n.wrapping_add(1);
    }
    groups.into_iter().flatten().collect()
}

// ---------------------------------------------------------------------------------------
// voxline.

/// The `voxline run` this tool started.
struct Voxline {
    child: Arc<Mutex<Option<Child>>>,
    pid: u32,
    dir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    sip: SocketAddr,
    http: SocketAddr,
}

impl Voxline {
    fn start(
        bin: &Path,
        args: &Args,
        agent: &str,
        slot: Arc<Mutex<Option<Child>>>,
    ) -> anyhow::Result<Voxline> {
        if !bin.is_file() {
            bail!(
                "{} not found: build it with `cargo build --release` or pass --voxline",
                bin.display()
            );
        }
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let dir =
            std::env::temp_dir().join(format!("voxline-rtbench-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let data = dir.join("data");
        let jitter = args
            .jitter_min_ms
            .map_or(String::new(), |j| format!("jitter_min_ms = {j}\n"));
        let config = format!(
            r#"data_dir = "{data}"

[limits]
max_calls = {max_calls}

[media]
rtp_port_min = 20000
rtp_port_max = 24000
{jitter}
[[route]]
number = "*"
agent = "ai"

[[agent]]
name = "ai"
instructions = "benchmark"
allow_from = ["127.0.0.0/8"]
record = false
{agent}
{dsp}"#,
            data = data.display(),
            max_calls = args.calls + 10,
            dsp = if args.no_dsp {
                "\n[agent.dsp]\nenabled = false\n"
            } else {
                ""
            },
        );
        let config_path = dir.join("voxline.toml");
        std::fs::write(&config_path, config)?;
        let sip = free_sip_port()?;
        let http = SocketAddr::from((
            [127, 0, 0, 1],
            TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        ));
        let log = dir.join("voxline.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--sip-listen")
            .arg(sip.to_string())
            .arg("--http-listen")
            .arg(http.to_string())
            .current_dir(&dir)
            .env(
                "VOXLINE_LOG",
                std::env::var("VOXLINE_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env(KEY_ENV, KEY)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        *lock(&slot) = Some(child);
        let vox = Voxline {
            child: slot,
            pid,
            dir,
            data,
            log,
            sip,
            http,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if matches!(http_get(vox.http, "/health"), Ok((200, _))) {
                return Ok(vox);
            }
            let exited = lock(&vox.child)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&vox.log).unwrap_or_default();
                let dir = vox.dir.display().to_string();
                vox.stop(true);
                match exited {
                    Some(status) => bail!("voxline exited ({status}), files in {dir}:\n{log}"),
                    None => {
                        bail!("voxline did not answer /health within 10 s, files in {dir}:\n{log}")
                    }
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn active_calls(&self) -> anyhow::Result<u64> {
        let (code, body) = http_get(self.http, "/health")?;
        if code != 200 {
            bail!("/health answered {code}");
        }
        let v: serde_json::Value = serde_json::from_str(&body)?;
        v["active_calls"]
            .as_u64()
            .ok_or_else(|| anyhow!("no active_calls in /health: {body}"))
    }

    /// Waits until `calls` call records have ended; their turn figures.
    fn wait_records(
        &self,
        calls: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<(String, Vec<TurnLatency>)>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(reader) = RecordReader::open(&self.data)
                && let Ok(list) = reader.list(1000, 0)
                && list.iter().filter(|r| r.ended_at.is_some()).count() >= calls
            {
                return Ok(list
                    .into_iter()
                    .map(|r| (r.call_id, r.turn_latencies))
                    .collect());
            }
            if Instant::now() > deadline {
                bail!("the call records did not all end within {limit:?}");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops voxline (through its `Child`) and removes the directory unless `keep`.
    fn stop(self, keep: bool) {
        if let Some(mut c) = lock(&self.child).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if keep {
            println!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------
// SIP: one INVITE dialog over UDP.

struct SipCall {
    sock: UdpSocket,
    vox: SocketAddr,
    local: SocketAddr,
    call_id: String,
    from_tag: String,
    /// The To header of the dialog (with voxline's tag).
    to: String,
    target: String,
    cseq: u32,
    /// voxline's RTP address from the answer.
    media: SocketAddr,
}

impl SipCall {
    /// INVITE with a PCMU offer for our RTP port, wait for the 200, ACK it.
    fn invite(vox: SocketAddr, rtp_port: u16, n: usize) -> anyhow::Result<SipCall> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let local = sock.local_addr()?;
        let pid = std::process::id();
        let mut call = SipCall {
            sock,
            vox,
            local,
            call_id: SipCall::call_id_of(n),
            from_tag: format!("rb{pid}x{n}"),
            to: format!("<sip:bench@{vox}>"),
            target: format!("sip:bench@{vox}"),
            cseq: 1,
            media: vox,
        };
        let sdp = format!(
            "v=0\r\no=bench {n} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
        );
        let req = call.request("INVITE", Some(&sdp));
        let ok = call.transaction(&req, "INVITE")?;
        if status(&ok) != Some(200) {
            bail!("INVITE answered: {}", ok.lines().next().unwrap_or(""));
        }
        call.to = header(&ok, &["to", "t"])
            .context("no To in the 200")?
            .to_owned();
        if let Some(c) = header(&ok, &["contact", "m"]) {
            let c = c.trim();
            let uri = c
                .strip_prefix('<')
                .and_then(|r| r.split('>').next())
                .unwrap_or(c);
            call.target = uri.to_owned();
        }
        let body = ok.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let ip = body
            .lines()
            .find_map(|l| l.trim().strip_prefix("c=IN IP4 "))
            .context("no c= in the answer")?
            .trim();
        let port = body
            .lines()
            .find_map(|l| l.trim().strip_prefix("m=audio "))
            .and_then(|r| r.split_whitespace().next())
            .context("no m=audio in the answer")?;
        call.media = format!("{ip}:{port}").parse()?;
        let ack = call.request("ACK", None);
        call.sock.send_to(ack.as_bytes(), vox)?;
        Ok(call)
    }

    /// The SIP Call-ID of call `n`.
    fn call_id_of(n: usize) -> String {
        format!("rtbench-{}-{n}@127.0.0.1", std::process::id())
    }

    /// BYE; the final status.
    fn bye(&mut self) -> anyhow::Result<u16> {
        self.cseq += 1;
        let req = self.request("BYE", None);
        let resp = self.transaction(&req, "BYE")?;
        status(&resp).context("no status")
    }

    fn request(&self, method: &str, body: Option<&str>) -> String {
        let uri = if method == "INVITE" {
            format!("sip:bench@{}", self.vox)
        } else {
            self.target.clone()
        };
        let (ctype, body) = match body {
            Some(b) => ("Content-Type: application/sdp\r\n", b),
            None => ("", ""),
        };
        let cseq_method = if method == "ACK" { "ACK" } else { method };
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-rb{cseq}{method}{tag};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:caller@{local}>;tag={tag}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} {cseq_method}\r\n\
             Contact: <sip:caller@{local}>\r\n\
             {ctype}Content-Length: {len}\r\n\r\n{body}",
            local = self.local,
            tag = self.from_tag,
            to = self.to,
            call_id = self.call_id,
            cseq = self.cseq,
            len = body.len(),
        )
    }

    /// Sends `req` (again every 500 ms until a provisional response) until the final response
    /// to it; answers requests from voxline with 200 meanwhile.
    fn transaction(&self, req: &str, method: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let cseq = format!("{} {method}", self.cseq);
        let mut next_send = Instant::now();
        let mut provisional = false;
        let mut buf = vec![0u8; 65535];
        loop {
            let now = Instant::now();
            if now > deadline {
                bail!("no final response to {method} within 10 s");
            }
            if !provisional && now >= next_send {
                self.sock.send_to(req.as_bytes(), self.vox)?;
                next_send = now + Duration::from_millis(500);
            }
            let wait = if provisional {
                deadline - now
            } else {
                next_send - now
            };
            self.sock
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
            let Ok((n, _)) = self.sock.recv_from(&mut buf) else {
                continue;
            };
            let msg = String::from_utf8_lossy(buf.get(..n).unwrap_or_default()).into_owned();
            match status(&msg) {
                Some(code) if header(&msg, &["cseq"]).map(str::trim) == Some(cseq.as_str()) => {
                    if code >= 200 {
                        return Ok(msg);
                    }
                    provisional = true;
                }
                Some(_) => {}
                None if !msg.starts_with("ACK ") => {
                    let ok = response_200(&msg);
                    self.sock.send_to(ok.as_bytes(), self.vox)?;
                }
                None => {}
            }
        }
    }
}

fn status(msg: &str) -> Option<u16> {
    let rest = msg.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// The value of the first header named one of `names` (lower case; compact forms included).
fn header<'a>(msg: &'a str, names: &[&str]) -> Option<&'a str> {
    let head = msg.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        names
            .iter()
            .any(|n| name.trim().eq_ignore_ascii_case(n))
            .then_some(value.trim())
    })
}

fn response_200(req: &str) -> String {
    let head = req.split("\r\n\r\n").next().unwrap_or("");
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in head.lines().skip(1) {
        let name = line.split(':').next().unwrap_or("").trim();
        if ["via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------
// RTP, audio, /proc, HTTP.

fn rtp_packet(seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(12 + payload.len());
    p.push(0x80);
    p.push(u8::from(marker) << 7); // payload type 0, PCMU
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// (payload type, payload) of an RTP packet; `None` for RTCP and anything malformed.
fn rtp_payload(pkt: &[u8]) -> Option<(u8, &[u8])> {
    let (&b0, rest) = pkt.split_first()?;
    let &b1 = rest.first()?;
    if b0 >> 6 != 2 || (192..=223).contains(&b1) {
        return None;
    }
    let cc = usize::from(b0 & 0x0f);
    let mut at = 12 + 4 * cc;
    if b0 & 0x10 != 0 {
        let words = pkt.get(at + 2..at + 4)?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    Some((b1 & 0x7f, pkt.get(at..)?))
}

/// Whether a PCMU payload carries agent audio (voxline sends `0xFF` silence otherwise).
fn is_agent_audio(payload: &[u8]) -> bool {
    payload.iter().any(|&b| b != 0xFF && b != 0x7F)
}

/// One second of the caller "speaking" (a 300 Hz μ-law tone at half scale, loud for the
/// mock's energy VAD), as 50 frames that loop seamlessly.
fn speech_frames() -> Vec<Vec<u8>> {
    tone(300.0, 16000.0, 1000, 8000)
        .chunks(FRAME)
        .map(|f| f.iter().map(|&s| ulaw_encode(s)).collect())
        .collect()
}

/// Receives one datagram with its kernel arrival time (`SO_TIMESTAMPNS`); `WouldBlock` when
/// none is queued on a non-blocking socket.
fn recv_stamped(sock: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, Instant)> {
    let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    let (now, wall) = (Instant::now(), SystemTime::now());
    let mut at = now;
    if let Ok(mut cms) = msg.cmsgs()
        && let Some(ControlMessageOwned::ScmTimestampns(ts)) = cms.next()
    {
        let t = UNIX_EPOCH + Duration::new(ts.tv_sec().max(0) as u64, ts.tv_nsec().max(0) as u32);
        at = now
            .checked_sub(wall.duration_since(t).unwrap_or_default())
            .unwrap_or(now);
    }
    Ok((msg.bytes, at))
}

/// A port free for UDP and TCP on 127.0.0.1 (voxline's SIP listens on both).
fn free_sip_port() -> anyhow::Result<SocketAddr> {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let addr = udp.local_addr()?;
        if TcpListener::bind(addr).is_ok() {
            return Ok(addr);
        }
    }
    bail!("no free SIP port on 127.0.0.1")
}

fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad HTTP response")?;
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((code, body))
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    stat_ticks(&format!("/proc/{pid}/stat"))
}

fn self_ticks() -> anyhow::Result<u64> {
    stat_ticks("/proc/self/stat")
}

fn stat_ticks(path: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(path)?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').context("bad stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("no utime")?.parse()?;
    let stime: u64 = f.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")
}

/// Busy time of the whole machine (all CPUs, not idle or iowait), in clock ticks.
fn machine_busy_ticks() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let cpu = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok(total - idle)
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if that fails).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints n, median, p95 and max of `v` (nearest rank).
fn row(name: &str, v: &[f64]) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if s.is_empty() {
            return f64::NAN;
        }
        let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s.get(rank - 1).copied().unwrap_or(f64::NAN)
    };
    println!(
        "{name:<58} {:>4} {:>8.1} {:>8.1} {:>8.1}",
        s.len(),
        pct(0.5),
        pct(0.95),
        pct(1.0)
    );
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
