//! Adaptive jitter buffer under simulated networks: a virtual clock, a 20 ms G.711-like
//! stream (8 kHz, 160 ticks a frame) and seeded loss, jitter, reordering, bursts, pauses and
//! clock drift. Each test prints its concealment ratio and delays (`--nocapture`).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::jitter::{ConcealCause, JitterBuffer, JitterConfig, JitterStats, Playout};
use voxline::media::rtp::{RtpHeader, RtpReceiver, RtpReceiverConfig, RtpTimestamp, SeqNo, Ssrc};
use voxline::sdp::PayloadType;

const FRAME: Duration = Duration::from_millis(20);
const SPF: u32 = 160;
const RATE: u32 = 8000;
/// Offset of our pacer relative to the sender's frame clock.
const PACER_PHASE: Duration = Duration::from_millis(7);

#[derive(Clone)]
struct Scenario {
    seconds: f64,
    seq0: u16,
    ts0: u32,
    /// Sender clock speed relative to ours (1.001: sender 0.1 % fast).
    skew: f64,
    base_delay_ms: f64,
    /// Uniform extra delay 0..jitter_ms per packet.
    jitter_ms: f64,
    /// Independent loss probability.
    loss: f64,
    /// (probability a burst starts at a packet, min length, max length).
    burst: Option<(f64, usize, usize)>,
    /// (probability, extra delay in ms) of holding one packet back.
    reorder: Option<(f64, f64)>,
    /// (start in s, length in ms): the network holds everything sent meanwhile.
    pause: Option<(f64, f64)>,
    seed: u64,
}

impl Scenario {
    fn new(seconds: f64, seed: u64) -> Self {
        Self {
            seconds,
            seq0: 1000,
            ts0: 123_456,
            skew: 1.0,
            base_delay_ms: 30.0,
            jitter_ms: 0.0,
            loss: 0.0,
            burst: None,
            reorder: None,
            pause: None,
            seed,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Out {
    Frame(u32),
    Compress(u32, u32),
    Conceal(ConcealCause),
    Silence,
}

struct Run {
    outputs: Vec<Out>,
    /// Stats after every pop.
    stats: Vec<JitterStats>,
    lost: Vec<bool>,
    /// Packets pushed (the last ones arrive after the final pop).
    pushed: u64,
    max_buffered: usize,
}

impl Run {
    fn at_secs(&self, s: f64) -> JitterStats {
        let i = ((s * 50.0) as usize).min(self.stats.len() - 1);
        self.stats[i]
    }
}

fn delta(a: &JitterStats, b: &JitterStats) -> JitterStats {
    JitterStats {
        frames: b.frames - a.frames,
        played: b.played - a.played,
        concealed: b.concealed - a.concealed,
        expanded: b.expanded - a.expanded,
        compressed: b.compressed - a.compressed,
        silence: b.silence - a.silence,
        late: b.late - a.late,
        duplicate: b.duplicate - a.duplicate,
        underruns: b.underruns - a.underruns,
        played_delay_total: b.played_delay_total - a.played_delay_total,
        ..*b
    }
}

fn mean_delay_ms(s: &JitterStats) -> f64 {
    if s.played == 0 {
        return 0.0;
    }
    s.played_delay_total.as_secs_f64() * 1000.0 / s.played as f64
}

fn report(name: &str, s: &JitterStats) {
    println!(
        "{name}: concealment {:.3} %, mean delay {:.1} ms, target {:.1} ms, current {:.1} ms, \
         played {}, concealed {}, expanded {}, compressed {}, silence {}, late {}, underruns {}, \
         drift {:.0} ppm",
        s.concealment_ratio() * 100.0,
        mean_delay_ms(s),
        s.target_delay.as_secs_f64() * 1000.0,
        s.current_delay.as_secs_f64() * 1000.0,
        s.played,
        s.concealed,
        s.expanded,
        s.compressed,
        s.silence,
        s.late,
        s.underruns,
        s.drift_ppm,
    );
}

fn payload(k: u32) -> [u8; 4] {
    k.to_be_bytes()
}

fn frame_index(p: &[u8]) -> u32 {
    u32::from_be_bytes(p.try_into().expect("4-byte payload"))
}

/// Runs `sc` through a default-configured buffer.
fn simulate(sc: &Scenario) -> Run {
    simulate_with(sc, JitterConfig::new(RATE, FRAME))
}

fn simulate_with(sc: &Scenario, cfg: JitterConfig) -> Run {
    let mut rng = StdRng::seed_from_u64(sc.seed);
    let t0 = Instant::now();
    let n = (sc.seconds * 50.0) as u32;
    let mut lost = vec![false; n as usize];
    let mut burst_left = 0usize;
    let mut packets: Vec<(Duration, u32)> = Vec::with_capacity(n as usize);
    for k in 0..n {
        let send = FRAME.mul_f64(f64::from(k) / sc.skew);
        let mut arrival = send.as_secs_f64() * 1000.0 + sc.base_delay_ms;
        if sc.jitter_ms > 0.0 {
            arrival += rng.gen_range(0.0..sc.jitter_ms);
        }
        if let Some((p, extra)) = sc.reorder
            && rng.gen_bool(p)
        {
            arrival += extra;
        }
        if let Some((at, len)) = sc.pause {
            let s = send.as_secs_f64();
            if s >= at && s < at + len / 1000.0 {
                arrival = arrival.max((at * 1000.0) + len + sc.base_delay_ms);
            }
        }
        if let Some((p, min, max)) = sc.burst
            && burst_left == 0
            && rng.gen_bool(p)
        {
            burst_left = rng.gen_range(min..=max);
        }
        let drop = if burst_left > 0 {
            burst_left -= 1;
            true
        } else {
            sc.loss > 0.0 && rng.gen_bool(sc.loss)
        };
        if drop {
            lost[k as usize] = true;
            continue;
        }
        packets.push((Duration::from_secs_f64(arrival / 1000.0), k));
    }
    packets.sort_by_key(|&(a, k)| (a, k));

    let mut jb = JitterBuffer::new(cfg).expect("valid config");
    let mut outputs = Vec::new();
    let mut stats = Vec::new();
    let mut max_buffered = 0;
    let mut next = 0;
    for j in 0..n {
        let now = t0 + PACER_PHASE + FRAME * j;
        while let Some(&(a, k)) = packets.get(next) {
            if t0 + a > now {
                break;
            }
            let seq = SeqNo(sc.seq0.wrapping_add(k as u16));
            let ts = RtpTimestamp(sc.ts0.wrapping_add(k.wrapping_mul(SPF)));
            jb.push(t0 + a, seq, ts, k == 0, &payload(k));
            next += 1;
        }
        max_buffered = max_buffered.max(jb.stats().buffered);
        let out = match jb.pop(now) {
            Playout::Frame(f) => {
                let k = frame_index(f.payload);
                assert_eq!(f.seq, SeqNo(sc.seq0.wrapping_add(k as u16)));
                assert_eq!(f.ts, RtpTimestamp(sc.ts0.wrapping_add(k.wrapping_mul(SPF))));
                Out::Frame(k)
            }
            Playout::Compress(a, b) => {
                Out::Compress(frame_index(a.payload), frame_index(b.payload))
            }
            Playout::Conceal { cause, .. } => Out::Conceal(cause),
            Playout::Silence { .. } => Out::Silence,
        };
        outputs.push(out);
        stats.push(jb.stats());
    }
    Run {
        outputs,
        stats,
        lost,
        pushed: next as u64,
        max_buffered,
    }
}

/// Frame indices in playout order.
fn played(run: &Run) -> Vec<u32> {
    let mut v = Vec::new();
    for o in &run.outputs {
        match *o {
            Out::Frame(k) => v.push(k),
            Out::Compress(a, b) => {
                v.push(a);
                v.push(b);
            }
            _ => {}
        }
    }
    v
}

fn assert_in_order(run: &Run) {
    let p = played(run);
    for w in p.windows(2) {
        assert!(w[0] < w[1], "frames out of order or repeated: {w:?}");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
fn steady_stream_without_jitter_plays_everything_near_min_delay() {
    let sc = Scenario::new(60.0, 1);
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("steady", &end);
    assert_in_order(&run);
    assert_eq!(end.concealed, 0);
    assert_eq!(end.underruns, 0);
    assert_eq!(end.late, 0);
    assert_eq!(end.target_delay, Duration::from_millis(20));
    // The current delay is kept in target - frame/4 ..= target + frame.
    let mean = mean_delay_ms(&end);
    assert!((15.0..=40.0).contains(&mean), "mean delay {mean} ms");
    // Every packet pushed is played, but for what is still buffered at the end.
    assert_eq!(end.played + end.buffered as u64, run.pushed);
    assert!(run.pushed >= 2997);
}

#[test]
fn jitter_up_to_60ms_grows_target_without_underruns() {
    let mut sc = Scenario::new(180.0, 2);
    sc.jitter_ms = 60.0;
    let run = simulate(&sc);
    let warm = run.at_secs(10.0);
    let end = *run.stats.last().unwrap();
    let steady = delta(&warm, &end);
    report("jitter 0-60 ms, after 10 s warm-up", &steady);
    assert_in_order(&run);
    // The target covers the 60 ms spread plus half a frame, and no more than one extra frame.
    let target = ms(end.target_delay);
    assert!((60.0..=90.0).contains(&target), "target {target} ms");
    assert_eq!(steady.underruns, 0);
    // A packet is late only if its delay exceeds the current delay, which stays above
    // target - 5 ms = the largest recent delay + 5 ms: essentially never.
    assert!(
        steady.concealment_ratio() < 0.002,
        "concealment {}",
        steady.concealment_ratio()
    );
    let mean = mean_delay_ms(&steady);
    assert!((55.0..=100.0).contains(&mean), "mean delay {mean} ms");
}

#[test]
fn five_percent_random_loss_is_concealed_frame_for_frame() {
    let mut sc = Scenario::new(300.0, 3);
    sc.loss = 0.05;
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("5 % loss", &end);
    assert_in_order(&run);
    let lost = run.lost.iter().filter(|&&l| l).count() as f64 / run.lost.len() as f64;
    let ratio = end.concealment_ratio();
    println!("5 % loss: actual loss {:.3} %", lost * 100.0);
    assert!(
        (ratio - lost).abs() < 0.005,
        "concealment {ratio} vs loss {lost}"
    );
    assert!((ratio - 0.05).abs() < 0.01, "concealment {ratio}");
    // Loss alone does not grow the delay.
    assert_eq!(end.target_delay, Duration::from_millis(20));
}

#[test]
fn loss_bursts_conceal_then_fall_silent_and_resume() {
    let mut sc = Scenario::new(300.0, 4);
    sc.burst = Some((0.01, 2, 12));
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("bursts of 2-12 frames", &end);
    assert_in_order(&run);
    let lost = run.lost.iter().filter(|&&l| l).count() as u64;
    // Every lost frame is either concealed or (past 5 in a row) silence.
    let gap_frames = end.concealed + end.silence;
    // Silence also covers the start-up before the first packet plays (at most 2 frames).
    assert!(
        gap_frames >= lost && gap_frames <= lost + 2,
        "concealed {} + silence {} vs lost {lost}",
        end.concealed,
        end.silence
    );
    // Never more than max_conceal_frames (5) concealments in a row.
    let mut run_len = 0;
    for o in &run.outputs {
        if matches!(o, Out::Conceal(ConcealCause::Missing)) {
            run_len += 1;
            assert!(run_len <= 5, "concealed {run_len} frames in a row");
        } else {
            run_len = 0;
        }
    }
    // Everything that arrived was played (or is still buffered at the end).
    assert_eq!(end.late, 0);
    assert_eq!(end.played + end.buffered as u64, run.pushed);
}

#[test]
fn reordered_packets_are_put_back_in_order() {
    let mut sc = Scenario::new(120.0, 5);
    // One packet in ten is held back 30 ms: it arrives after the next one or two.
    sc.reorder = Some((0.1, 30.0));
    let run = simulate(&sc);
    let warm = run.at_secs(5.0);
    let end = *run.stats.last().unwrap();
    let steady = delta(&warm, &end);
    report("10 % reordered by 30 ms, after warm-up", &steady);
    assert_in_order(&run);
    assert_eq!(steady.concealed, 0);
    assert_eq!(steady.late, 0);
    let target = ms(end.target_delay);
    assert!((40.0..=60.0).contains(&target), "target {target} ms");
}

#[test]
fn sequence_and_timestamp_wrap_are_seamless() {
    let mut sc = Scenario::new(30.0, 6);
    sc.seq0 = 65_500;
    sc.ts0 = u32::MAX - 50 * SPF;
    sc.jitter_ms = 10.0;
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("seq/ts wrap", &end);
    assert_in_order(&run);
    assert_eq!(end.resyncs, 0);
    assert_eq!(end.concealed, 0);
    assert_eq!(end.late, 0);
    // Frames 36 (seq wrap) and 51 (timestamp wrap) are among those played.
    let p = played(&run);
    assert!(p.contains(&36) && p.contains(&51));
    assert!(end.played >= 1495, "played {}", end.played);
}

fn drift(skew: f64, seed: u64) -> (Run, JitterStats) {
    let mut sc = Scenario::new(600.0, seed);
    sc.skew = skew;
    sc.jitter_ms = 10.0;
    let run = simulate(&sc);
    let warm = run.at_secs(10.0);
    // Stop before the end: a fast sender's stream ends before our pacer's.
    let end = run.at_secs(590.0);
    (run, delta(&warm, &end))
}

#[test]
fn sender_clock_fast_by_0_1_percent_is_compressed_away() {
    let (run, steady) = drift(1.001, 7);
    report("sender +0.1 % over 10 min", &steady);
    println!("max buffered {} packets", run.max_buffered);
    assert_in_order(&run);
    assert_eq!(steady.underruns, 0);
    assert_eq!(steady.concealed, 0);
    // 0.1 % of 580 s is 580 ms = 29 frames to remove.
    assert!(
        (25..=35).contains(&steady.compressed),
        "compressed {}",
        steady.compressed
    );
    // The buffer stays bounded: the delay stays within its band around the target.
    assert!(run.max_buffered <= 4, "max buffered {}", run.max_buffered);
    assert!(ms(steady.current_delay) <= ms(steady.target_delay) + 20.5);
    assert!(
        (700.0..=1300.0).contains(&steady.drift_ppm),
        "drift {} ppm",
        steady.drift_ppm
    );
}

#[test]
fn sender_clock_slow_by_0_1_percent_is_stretched_without_underruns() {
    let (run, steady) = drift(0.999, 8);
    report("sender -0.1 % over 10 min", &steady);
    assert_in_order(&run);
    assert_eq!(steady.underruns, 0);
    assert_eq!(steady.concealed, 0);
    // The sender falls 580 ms behind: 29 frames to insert.
    assert!(
        (25..=35).contains(&steady.expanded),
        "expanded {}",
        steady.expanded
    );
    assert!(ms(steady.current_delay) >= ms(steady.target_delay) - 5.5);
    assert!(
        (-1300.0..=-700.0).contains(&steady.drift_ppm),
        "drift {} ppm",
        steady.drift_ppm
    );
}

#[test]
fn network_pause_of_300ms_recovers() {
    let mut sc = Scenario::new(120.0, 9);
    sc.jitter_ms = 5.0;
    sc.pause = Some((30.0, 300.0));
    let run = simulate(&sc);
    let before = run.at_secs(29.0);
    let spike = delta(&run.at_secs(29.0), &run.at_secs(35.0));
    let after = delta(&run.at_secs(100.0), run.stats.last().unwrap());
    report("before the pause", &before);
    report("around the 300 ms pause (29-35 s)", &spike);
    report("65-90 s after the pause", &after);
    assert_in_order(&run);
    // During the pause: up to 5 concealed frames, then silence.
    assert!(spike.concealed <= 5, "concealed {}", spike.concealed);
    assert!(spike.silence >= 5, "silence {}", spike.silence);
    // The target jumped towards the maximum...
    let peak = run.stats[1500..2000]
        .iter()
        .map(|s| s.target_delay)
        .max()
        .unwrap();
    assert!(ms(peak) >= 190.0, "peak target {} ms", ms(peak));
    // ...and came back down: near the 5 ms jitter again, nothing concealed.
    assert!(
        ms(after.target_delay) <= 40.0,
        "target {:?}",
        after.target_delay
    );
    assert!(
        mean_delay_ms(&after) <= 50.0,
        "mean delay {}",
        mean_delay_ms(&after)
    );
    assert_eq!(after.concealed, 0);
    assert_eq!(after.underruns, 0);
}

#[test]
fn ssrc_change_through_the_receiver_restarts_the_buffer() {
    // Stream A (SSRC 1) for 10 s, then stream B (SSRC 2, unrelated seq/ts) for 10 s, as after
    // a transfer. The receiver drops B's first packet (probation 2), then flags new_stream.
    let pcmu = PayloadType::new(0).unwrap();
    let mut rx = RtpReceiver::new(RtpReceiverConfig::new(RATE, vec![pcmu], None));
    let mut jb = JitterBuffer::new(JitterConfig::new(RATE, FRAME)).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    let mut new_streams = 0;
    for j in 0..1000u32 {
        let send = FRAME * j;
        let (ssrc, seq, ts) = if j < 500 {
            (
                Ssrc(1),
                SeqNo(100u16.wrapping_add(j as u16)),
                RtpTimestamp(5000 + j * SPF),
            )
        } else {
            let k = j - 500;
            (
                Ssrc(2),
                SeqNo(40_000u16.wrapping_add(k as u16)),
                RtpTimestamp(9_000_000 + k * SPF),
            )
        };
        let header = RtpHeader {
            marker: j == 0 || j == 500,
            payload_type: pcmu,
            seq,
            timestamp: ts,
            ssrc,
        };
        let n = header.write_packet(&payload(j), &mut buf).unwrap();
        let arrival = t0 + send + Duration::from_millis(30);
        if let Ok(r) = rx.receive(arrival, &buf[..n]) {
            if r.new_stream {
                new_streams += 1;
                if j > 0 {
                    jb.new_stream();
                }
            }
            jb.push(
                arrival,
                r.packet.seq,
                r.packet.timestamp,
                r.packet.marker,
                r.packet.payload,
            );
        }
        let now = t0 + send + Duration::from_millis(37);
        out.push(match jb.pop(now) {
            Playout::Frame(f) => Out::Frame(frame_index(f.payload)),
            Playout::Compress(a, b) => {
                Out::Compress(frame_index(a.payload), frame_index(b.payload))
            }
            Playout::Conceal { cause, .. } => Out::Conceal(cause),
            Playout::Silence { .. } => Out::Silence,
        });
    }
    let s = jb.stats();
    report("SSRC change", &s);
    assert_eq!(new_streams, 2);
    assert_eq!(rx.stats().ssrc_changes, 1);
    assert_eq!(rx.stats().probation, 1);
    assert_eq!(s.resyncs, 1);
    assert_eq!(s.concealed, 0);
    // B's frames play from its second packet on, a couple of frames after the switch.
    let first_b = out
        .iter()
        .position(|o| matches!(o, Out::Frame(k) if *k >= 500))
        .unwrap();
    assert!((501..=504).contains(&first_b), "B starts at slot {first_b}");
    assert!(matches!(out[first_b], Out::Frame(501)));
    assert!(matches!(out[999], Out::Frame(_)));
}

#[test]
fn unannounced_timestamp_and_sequence_jump_resyncs_by_itself() {
    let mut jb = JitterBuffer::new(JitterConfig::new(RATE, FRAME)).unwrap();
    let t0 = Instant::now();
    let mut frames = 0;
    for j in 0..200u32 {
        let (seq, ts) = if j < 100 {
            (SeqNo(j as u16), RtpTimestamp(j * SPF))
        } else {
            (
                SeqNo(30_000 + j as u16),
                RtpTimestamp(3_000_000_000 + j * SPF),
            )
        };
        jb.push(t0 + FRAME * j, seq, ts, false, &payload(j));
        if let Playout::Frame(f) = jb.pop(t0 + FRAME * j + Duration::from_millis(15)) {
            frames += 1;
            assert!(frame_index(f.payload) <= j);
        }
    }
    let s = jb.stats();
    report("unannounced jump", &s);
    assert_eq!(s.resyncs, 1);
    assert!(frames >= 196, "played {frames}");
    assert_eq!(s.concealed, 0);
}

#[test]
fn duplicates_and_late_packets_are_counted_and_dropped() {
    let mut sc = Scenario::new(20.0, 10);
    sc.jitter_ms = 60.0;
    let mut cfg = JitterConfig::new(RATE, FRAME);
    // A buffer that cannot grow past 20 ms (+ one frame of band): packets delayed by more
    // than its current delay come too late.
    cfg.max_delay = Duration::from_millis(20);
    let run = simulate_with(&sc, cfg);
    let end = *run.stats.last().unwrap();
    report("max delay 20 ms, jitter 0-60 ms", &end);
    assert_in_order(&run);
    assert!(end.late > 50, "late {}", end.late);
    assert!(end.concealed > 50, "concealed {}", end.concealed);
    assert_eq!(
        end.concealed + end.silence + end.expanded,
        end.frames - end.played + end.compressed
    );

    let mut jb = JitterBuffer::new(JitterConfig::new(RATE, FRAME)).unwrap();
    let t0 = Instant::now();
    for _ in 0..3 {
        jb.push(t0, SeqNo(7), RtpTimestamp(7 * SPF), false, b"x");
    }
    assert_eq!(jb.stats().duplicate, 2);
    assert_eq!(jb.stats().buffered, 1);
}

#[test]
fn arbitrary_input_never_panics_and_counts_add_up() {
    let mut rng = StdRng::seed_from_u64(11);
    let mut jb = JitterBuffer::new(JitterConfig::new(RATE, FRAME)).unwrap();
    let t0 = Instant::now();
    let mut now = t0;
    for _ in 0..100_000 {
        now += Duration::from_micros(rng.gen_range(0..30_000));
        if rng.gen_bool(0.5) {
            // Mostly near a plausible stream, sometimes anything.
            let k: u32 = rng.gen_range(0..2000);
            let (seq, ts) = if rng.gen_bool(0.9) {
                (SeqNo(k as u16), RtpTimestamp(k * SPF))
            } else {
                (SeqNo(rng.r#gen()), RtpTimestamp(rng.r#gen()))
            };
            let len = rng.gen_range(0..200);
            jb.push(now, seq, ts, rng.gen_bool(0.05), &vec![0u8; len]);
        } else {
            let _ = jb.pop(now);
        }
    }
    let s = jb.stats();
    assert_eq!(
        s.frames,
        s.played - s.compressed + s.concealed + s.expanded + s.silence
    );
    assert!(s.buffered <= jb.config().capacity);
    assert!(
        s.target_delay >= Duration::from_millis(20) && s.target_delay <= Duration::from_millis(200)
    );
}
