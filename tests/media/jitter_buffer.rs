//! Adaptive jitter buffer under simulated networks: a virtual clock, 20 ms playout frames, a
//! sender of any packetisation (10, 20, 30, 40 or 60 ms G.711-like packets at 8 kHz, 2.5 ms
//! Opus-like packets at 48 kHz), and seeded loss, jitter, reordering, bursts, pauses, silence
//! suppression and clock drift. Every payload byte names its tick on the sender's timeline, so
//! each test also checks that what plays is the sender's audio, in order, none twice. Each test
//! prints its concealment ratio and delays (`--nocapture`).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::jitter::{
    Adjust, ConcealCause, JitterBuffer, JitterConfig, JitterStats, Pushed, Segment,
};
use voxline::media::rtp::{RtpHeader, RtpReceiver, RtpReceiverConfig, RtpTimestamp, SeqNo, Ssrc};
use voxline::sdp::PayloadType;

const FRAME: Duration = Duration::from_millis(20);
const RATE: u32 = 8000;
/// Ticks per 20 ms frame at 8 kHz.
const SPF: u64 = 160;
/// Offset of our pacer relative to the sender's frame clock.
const PACER_PHASE: Duration = Duration::from_millis(7);

#[derive(Clone)]
struct Scenario {
    seconds: f64,
    /// RTP clock rate.
    rate: u32,
    /// The sender's packet duration in ticks, and changes of it: (from second, ticks).
    packet: u32,
    packet_changes: Vec<(f64, u32)>,
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
    /// Silence suppression: (talk seconds, silent seconds), repeating; the first packet of
    /// each talkspurt has the marker bit, and no sequence numbers are spent in silence.
    dtx: Option<(f64, f64)>,
    seed: u64,
}

impl Scenario {
    fn new(seconds: f64, seed: u64) -> Self {
        Self {
            seconds,
            rate: RATE,
            packet: 160,
            packet_changes: Vec::new(),
            seq0: 1000,
            ts0: 123_456,
            skew: 1.0,
            base_delay_ms: 30.0,
            jitter_ms: 0.0,
            loss: 0.0,
            burst: None,
            reorder: None,
            pause: None,
            dtx: None,
            seed,
        }
    }

    fn ptime_ms(mut self, ms: u32) -> Self {
        self.packet = self.rate / 1000 * ms;
        self
    }

    fn spf(&self) -> u64 {
        u64::from(self.rate) / 50
    }
}

/// One segment of one pop, in sender ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Out {
    /// Sender ticks `start .. start + len` played.
    Audio {
        start: i64,
        len: u32,
    },
    Conceal(ConcealCause, u32),
    Silence(u32),
}

struct Run {
    /// Per pop: its correction and its segments.
    pops: Vec<(Adjust, Vec<Out>)>,
    /// Stats after every pop.
    stats: Vec<JitterStats>,
    /// Ticks lost by the network, and ticks sent.
    lost_ticks: u64,
    sent_ticks: u64,
    /// Packets pushed (the last ones arrive after the final pop).
    pushed: u64,
    max_buffered: usize,
}

impl Run {
    fn at_secs(&self, s: f64) -> JitterStats {
        let i = ((s * 50.0) as usize).min(self.stats.len() - 1);
        self.stats[i]
    }

    /// The sender's ticks in playout order, as (start, len) runs.
    fn played(&self) -> Vec<(i64, u32)> {
        let mut v = Vec::new();
        for (_, segs) in &self.pops {
            for o in segs {
                if let Out::Audio { start, len } = *o {
                    v.push((start, len));
                }
            }
        }
        v
    }
}

fn delta(a: &JitterStats, b: &JitterStats) -> JitterStats {
    JitterStats {
        frames: b.frames - a.frames,
        speech_frames: b.speech_frames - a.speech_frames,
        played: b.played - a.played,
        concealed: b.concealed - a.concealed,
        expanded: b.expanded - a.expanded,
        compressed: b.compressed - a.compressed,
        removed: b.removed - a.removed,
        silence: b.silence - a.silence,
        late: b.late - a.late,
        duplicate: b.duplicate - a.duplicate,
        underruns: b.underruns - a.underruns,
        played_delay_total: b.played_delay_total - a.played_delay_total,
        ..*b
    }
}

fn mean_delay_ms(s: &JitterStats) -> f64 {
    if s.speech_frames == 0 {
        return 0.0;
    }
    s.played_delay_total.as_secs_f64() * 1000.0 / s.speech_frames as f64
}

fn report(name: &str, s: &JitterStats) {
    println!(
        "{name}: concealment {:.3} %, mean delay {:.1} ms, target {:.1} ms, current {:.1} ms, \
         played {}, concealed {}, expanded {}, compressed {}, silence {} ticks, late {}, \
         underruns {}, drift {:.0} ppm",
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

/// The payload of the packet starting at sender tick `x`: byte i names tick x + i.
fn payload(x: i64, len: u32) -> Vec<u8> {
    (0..i64::from(len)).map(|i| ((x + i) % 251) as u8).collect()
}

/// Runs `sc` through a default-configured buffer.
fn simulate(sc: &Scenario) -> Run {
    simulate_with(sc, JitterConfig::new(sc.rate, FRAME))
}

fn simulate_with(sc: &Scenario, cfg: JitterConfig) -> Run {
    let mut rng = StdRng::seed_from_u64(sc.seed);
    let t0 = Instant::now();
    let rate = f64::from(sc.rate);
    let end_ticks = (sc.seconds * rate) as i64;
    let mut burst_left = 0usize;
    // (arrival, seq index, sender tick, ticks, marker)
    let mut packets: Vec<(Duration, u32, i64, u32, bool)> = Vec::new();
    let (mut x, mut k) = (0i64, 0u32);
    let (mut lost_ticks, mut sent_ticks) = (0u64, 0u64);
    let mut talking = false;
    while x < end_ticks {
        let secs = x as f64 / rate;
        let p = sc
            .packet_changes
            .iter()
            .rev()
            .find(|(from, _)| secs >= *from)
            .map_or(sc.packet, |&(_, t)| t);
        if let Some((talk, silent)) = sc.dtx
            && secs % (talk + silent) >= talk
        {
            talking = false;
            x += i64::from(p);
            continue;
        }
        let marker = !talking;
        talking = true;
        // Sent when its last tick has been captured, on the sender's clock.
        let send = (x + i64::from(p)) as f64 / rate / sc.skew;
        let mut arrival = send * 1000.0 + sc.base_delay_ms;
        if sc.jitter_ms > 0.0 {
            arrival += rng.gen_range(0.0..sc.jitter_ms);
        }
        if let Some((prob, extra)) = sc.reorder
            && rng.gen_bool(prob)
        {
            arrival += extra;
        }
        if let Some((at, len)) = sc.pause
            && send >= at
            && send < at + len / 1000.0
        {
            arrival = arrival.max((at * 1000.0) + len + sc.base_delay_ms);
        }
        if let Some((prob, min, max)) = sc.burst
            && burst_left == 0
            && rng.gen_bool(prob)
        {
            burst_left = rng.gen_range(min..=max);
        }
        let drop = if burst_left > 0 {
            burst_left -= 1;
            true
        } else {
            sc.loss > 0.0 && rng.gen_bool(sc.loss)
        };
        sent_ticks += u64::from(p);
        if drop {
            lost_ticks += u64::from(p);
        } else {
            packets.push((Duration::from_secs_f64(arrival / 1000.0), k, x, p, marker));
        }
        x += i64::from(p);
        k += 1;
    }
    packets.sort_by_key(|&(a, k, ..)| (a, k));

    let mut jb = JitterBuffer::new(cfg).expect("valid config");
    let spf = sc.spf();
    let mut pops = Vec::new();
    let mut stats = Vec::new();
    let mut max_buffered = 0;
    let mut next = 0;
    let n = (sc.seconds * 50.0) as u32;
    for j in 0..n {
        let now = t0 + PACER_PHASE + FRAME * j;
        while let Some(&(a, k, x, p, marker)) = packets.get(next) {
            if t0 + a > now {
                break;
            }
            let seq = SeqNo::new(sc.seq0.wrapping_add(k as u16));
            let ts = RtpTimestamp::new(sc.ts0.wrapping_add(x as u32));
            jb.push(t0 + a, seq, ts, marker, &payload(x, p), p);
            next += 1;
        }
        max_buffered = max_buffered.max(jb.stats().buffered);
        let playout = jb.pop(now);
        let mut segs = Vec::new();
        for s in playout.segments() {
            segs.push(match s {
                Segment::Audio {
                    packet,
                    offset,
                    len,
                } => {
                    let x = i64::from(packet.ts.get().wrapping_sub(sc.ts0));
                    assert_eq!(packet.payload.len(), packet.duration as usize);
                    let want = payload(x, packet.duration);
                    let (o, l) = (offset as usize, len as usize);
                    assert_eq!(
                        &packet.payload[o..o + l],
                        &want[o..o + l],
                        "the segment's bytes are the sender's ticks"
                    );
                    Out::Audio {
                        start: x + i64::from(offset),
                        len,
                    }
                }
                Segment::Conceal { cause, len, .. } => Out::Conceal(cause, len),
                Segment::Silence { len } => Out::Silence(len),
            });
        }
        let ticks = u64::from(playout.ticks());
        match playout.adjust() {
            Adjust::Compress => assert!(ticks > spf && ticks <= 2 * spf, "pop {j}: {ticks}"),
            _ => assert_eq!(ticks, spf, "pop {j} covers its frame"),
        }
        pops.push((playout.adjust(), segs));
        stats.push(jb.stats());
    }
    Run {
        pops,
        stats,
        lost_ticks,
        sent_ticks,
        pushed: next as u64,
        max_buffered,
    }
}

/// The sender's ticks play in order, none twice.
fn assert_in_order(run: &Run) {
    let p = run.played();
    for w in p.windows(2) {
        let ((a, al), (b, _)) = (w[0], w[1]);
        assert!(
            a + i64::from(al) <= b,
            "ticks out of order or repeated: {w:?}"
        );
    }
}

/// Ticks played with no gap from the previous segment: the audio is continuous.
fn assert_continuous_within_talkspurts(run: &Run) {
    let p = run.played();
    let gaps = p
        .windows(2)
        .filter(|w| w[0].0 + i64::from(w[0].1) != w[1].0)
        .count();
    assert_eq!(gaps, 0, "gaps in the played ticks");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The current delay of every frame after `from_s` stays within target + one frame.
fn assert_delay_bounded(run: &Run, from_s: f64) {
    assert_delay_bounded_by(run, from_s, 0.0);
}

/// [`assert_delay_bounded`] with `slack_ms` more: a drifting sender's delay grows a little
/// past the band (and a shrinking target moves the band) until the next compression is due.
fn assert_delay_bounded_by(run: &Run, from_s: f64, slack_ms: f64) {
    for (i, s) in run.stats.iter().enumerate().skip((from_s * 50.0) as usize) {
        assert!(
            ms(s.current_delay) <= ms(s.target_delay) + 20.0 + slack_ms + 0.01,
            "frame {i}: delay {:?} over target {:?} + a frame",
            s.current_delay,
            s.target_delay
        );
    }
}

#[test]
fn steady_stream_without_jitter_plays_everything_near_min_delay() {
    let sc = Scenario::new(60.0, 1);
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("steady", &end);
    assert_in_order(&run);
    assert_continuous_within_talkspurts(&run);
    assert_eq!(end.concealed, 0);
    assert_eq!(end.underruns, 0);
    assert_eq!(end.late, 0);
    assert_eq!(end.target_delay, Duration::from_millis(20));
    // The current delay is kept in target - frame/4 ..= target + frame.
    let mean = mean_delay_ms(&end);
    assert!((15.0..=40.0).contains(&mean), "mean delay {mean} ms");
    // Every packet pushed is played, but for what is still buffered at the end.
    assert_eq!(end.played / SPF + end.buffered as u64, run.pushed);
    assert!(run.pushed >= 2997);
}

/// A sender of `ptime` ms packets on a clean network: everything plays, continuous, at the
/// minimum target, within target + one frame.
fn clean_packetisation(ptime: u32) {
    let sc = Scenario::new(60.0, 20 + u64::from(ptime)).ptime_ms(ptime);
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report(&format!("{ptime} ms packets, clean"), &end);
    assert_in_order(&run);
    assert_continuous_within_talkspurts(&run);
    assert_eq!(
        (end.concealed, end.late, end.underruns, end.expanded),
        (0, 0, 0, 0)
    );
    // Played all but the last packet or two, still buffered or not arrived at the end.
    assert!(
        end.played + 2 * u64::from(sc.packet) + 2 * SPF >= run.sent_ticks,
        "played {} of {}",
        end.played,
        run.sent_ticks
    );
    // The target covers the packet's phase in the frame, and only that: at most 20 + 10 ms.
    assert!(
        ms(end.target_delay) <= 30.0,
        "target {:?}",
        end.target_delay
    );
    assert_delay_bounded(&run, 1.0);
}

#[test]
fn packets_of_10ms_play_in_full() {
    clean_packetisation(10);
}

#[test]
fn packets_of_30ms_play_in_full() {
    clean_packetisation(30);
}

#[test]
fn packets_of_40ms_play_in_full() {
    clean_packetisation(40);
}

#[test]
fn packets_of_60ms_play_in_full() {
    clean_packetisation(60);
}

#[test]
fn odd_packet_sizes_play_in_full() {
    // 25 ms (200 samples) and 17.5 ms (140 samples): whole numbers of samples, not of frames.
    for ticks in [200, 140] {
        let mut sc = Scenario::new(30.0, 30 + u64::from(ticks));
        sc.packet = ticks;
        let run = simulate(&sc);
        let end = *run.stats.last().unwrap();
        report(&format!("{ticks}-tick packets"), &end);
        assert_in_order(&run);
        assert_continuous_within_talkspurts(&run);
        assert_eq!((end.concealed, end.late), (0, 0));
        assert_delay_bounded(&run, 1.0);
    }
}

/// `ptime` ms packets with 0-40 ms jitter and 3 % loss: concealment matches the loss, ticks
/// for ticks, and nothing else is lost.
fn lossy_jittery_packetisation(ptime: u32) {
    let mut sc = Scenario::new(180.0, 40 + u64::from(ptime)).ptime_ms(ptime);
    sc.jitter_ms = 40.0;
    sc.loss = 0.03;
    let run = simulate(&sc);
    let warm = run.at_secs(10.0);
    let end = *run.stats.last().unwrap();
    let steady = delta(&warm, &end);
    report(
        &format!("{ptime} ms packets, 0-40 ms jitter, 3 % loss"),
        &steady,
    );
    assert_in_order(&run);
    let lost = run.lost_ticks as f64 / run.sent_ticks as f64;
    let ratio = steady.concealment_ratio();
    assert!(
        (ratio - lost).abs() < 0.006,
        "concealment {ratio} vs loss {lost}"
    );
    let target = ms(end.target_delay);
    assert!((40.0..=80.0).contains(&target), "target {target} ms");
    assert_delay_bounded(&run, 10.0);
}

#[test]
fn packets_of_10ms_with_jitter_and_loss() {
    lossy_jittery_packetisation(10);
}

#[test]
fn packets_of_20ms_with_jitter_and_loss() {
    lossy_jittery_packetisation(20);
}

#[test]
fn packets_of_30ms_with_jitter_and_loss() {
    lossy_jittery_packetisation(30);
}

#[test]
fn packets_of_40ms_with_jitter_and_loss() {
    lossy_jittery_packetisation(40);
}

#[test]
fn packets_of_60ms_with_jitter_and_loss() {
    lossy_jittery_packetisation(60);
}

#[test]
fn silence_suppression_with_30ms_packets_plays_each_talkspurt_in_full() {
    let mut sc = Scenario::new(120.0, 50).ptime_ms(30);
    sc.dtx = Some((2.0, 1.3));
    sc.jitter_ms = 10.0;
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("30 ms packets, silence suppression", &end);
    assert_in_order(&run);
    assert_eq!(end.late, 0);
    // Nothing says a talkspurt has ended until the next one starts: its end is concealed for
    // up to 5 frames (fading out), then silence.
    let talkspurts = (120.0f64 / 3.3).ceil() as u64;
    assert!(
        end.concealed <= talkspurts * 5 * SPF,
        "concealed {}",
        end.concealed
    );
    assert!(end.played + 4 * 240 >= run.sent_ticks);
    // Each silence ends a talkspurt: the gaps are the sender's silences, no more.
    let gaps = run
        .played()
        .windows(2)
        .filter(|w| w[0].0 + i64::from(w[0].1) != w[1].0)
        .count();
    let talkspurts = talkspurts as usize;
    assert!(gaps < talkspurts, "{gaps} gaps for {talkspurts} talkspurts");
    assert_delay_bounded(&run, 1.0);
}

#[test]
fn packetisation_changing_mid_stream_plays_on() {
    // 20 ms, then 30 ms from 10 s, 10 ms from 20 s, 60 ms from 30 s, as after a re-INVITE or a
    // transfer that keeps the SSRC and the sequence.
    let mut sc = Scenario::new(40.0, 60);
    sc.packet_changes = vec![(10.0, 240), (20.0, 80), (30.0, 480)];
    sc.jitter_ms = 5.0;
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("20 -> 30 -> 10 -> 60 ms packets", &end);
    assert_in_order(&run);
    assert_eq!((end.late, end.resyncs), (0, 0));
    // Going to 60 ms packets, the first one comes 50 ms later than 10 ms packets would have
    // brought the same audio: that much is concealed once while the target grows, and
    // nothing else.
    assert!(end.concealed <= 480, "concealed {}", end.concealed);
    let gaps = run
        .played()
        .windows(2)
        .filter(|w| w[0].0 + i64::from(w[0].1) != w[1].0)
        .count();
    // The concealed spans are the only holes in the played audio.
    assert!(gaps <= 3, "{gaps} gaps");
}

#[test]
fn opus_packets_of_2_5ms_and_60ms_at_48khz() {
    for ticks in [120, 2880] {
        let mut sc = Scenario::new(30.0, 70 + u64::from(ticks));
        sc.rate = 48_000;
        sc.ts0 = 7;
        sc.packet = ticks;
        sc.jitter_ms = 10.0;
        sc.loss = 0.02;
        let run = simulate(&sc);
        let end = *run.stats.last().unwrap();
        report(&format!("opus {ticks}-tick packets"), &end);
        assert_in_order(&run);
        let lost = run.lost_ticks as f64 / run.sent_ticks as f64;
        let ratio = end.concealment_ratio();
        assert!(
            (ratio - lost).abs() < 0.01,
            "concealment {ratio} vs loss {lost}"
        );
        assert_delay_bounded(&run, 5.0);
    }
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
    assert!(
        steady.concealment_ratio() < 0.002,
        "concealment {}",
        steady.concealment_ratio()
    );
    let mean = mean_delay_ms(&steady);
    assert!((55.0..=100.0).contains(&mean), "mean delay {mean} ms");
    assert_delay_bounded(&run, 10.0);
}

#[test]
fn five_percent_random_loss_is_concealed_tick_for_tick() {
    let mut sc = Scenario::new(300.0, 3);
    sc.loss = 0.05;
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("5 % loss", &end);
    assert_in_order(&run);
    let lost = run.lost_ticks as f64 / run.sent_ticks as f64;
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
    // Every lost tick is either concealed or (past 5 frames in a row) silence; silence also
    // covers the start-up before the first packet plays (it arrives at 50 ms, then waits).
    let gap = end.concealed + end.silence;
    assert!(
        gap >= run.lost_ticks && gap <= run.lost_ticks + 4 * SPF,
        "concealed {} + silence {} vs lost {}",
        end.concealed,
        end.silence,
        run.lost_ticks
    );
    // Never more than max_conceal_frames (5) frames concealed in a row.
    let mut concealed_run = 0u64;
    for (_, segs) in &run.pops {
        for o in segs {
            match o {
                Out::Conceal(ConcealCause::Missing, len) => {
                    concealed_run += u64::from(*len);
                    assert!(
                        concealed_run <= 5 * SPF,
                        "concealed {concealed_run} in a row"
                    );
                }
                _ => concealed_run = 0,
            }
        }
    }
    // Everything that arrived was played (or is still buffered at the end).
    assert_eq!(end.late, 0);
    assert_eq!(end.played / SPF + end.buffered as u64, run.pushed);
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
    let mut sc = Scenario::new(30.0, 6).ptime_ms(30);
    sc.seq0 = 65_500;
    sc.ts0 = u32::MAX - 50 * 240;
    sc.jitter_ms = 10.0;
    let run = simulate(&sc);
    let end = *run.stats.last().unwrap();
    report("seq/ts wrap", &end);
    assert_in_order(&run);
    assert_continuous_within_talkspurts(&run);
    assert_eq!(end.resyncs, 0);
    assert_eq!(end.concealed, 0);
    assert_eq!(end.late, 0);
    assert!(end.played >= 29 * 8000, "played {}", end.played);
}

fn drift(sc: Scenario) -> (Run, JitterStats) {
    let run = simulate(&sc);
    let warm = run.at_secs(10.0);
    // Stop before the end: a fast sender's stream ends before our pacer's.
    let end = run.at_secs(590.0);
    (run, delta(&warm, &end))
}

fn drifting(skew: f64, ptime: u32, seed: u64) -> Scenario {
    let mut sc = Scenario::new(600.0, seed).ptime_ms(ptime);
    sc.skew = skew;
    sc.jitter_ms = 10.0;
    sc
}

#[test]
fn sender_clock_fast_by_0_1_percent_is_compressed_away() {
    for ptime in [20, 30] {
        let (run, steady) = drift(drifting(1.001, ptime, 7));
        report(
            &format!("{ptime} ms packets, sender +0.1 % over 10 min"),
            &steady,
        );
        println!("max buffered {} packets", run.max_buffered);
        assert_in_order(&run);
        assert_eq!(steady.underruns, 0);
        assert_eq!(steady.concealed, 0);
        // 0.1 % of 580 s is 580 ms = 29 frames to remove.
        let removed = steady.removed / SPF;
        assert!((25..=35).contains(&removed), "removed {removed} frames");
        // The buffer stays bounded: the delay stays within its band around the target.
        assert!(run.max_buffered <= 5, "max buffered {}", run.max_buffered);
        assert_delay_bounded_by(&run, 10.0, 2.5);
        assert!(
            (700.0..=1300.0).contains(&steady.drift_ppm),
            "drift {} ppm",
            steady.drift_ppm
        );
    }
}

#[test]
fn sender_clock_slow_by_0_1_percent_is_stretched_without_underruns() {
    for ptime in [20, 30] {
        let (run, steady) = drift(drifting(0.999, ptime, 8));
        report(
            &format!("{ptime} ms packets, sender -0.1 % over 10 min"),
            &steady,
        );
        assert_in_order(&run);
        assert_eq!(steady.underruns, 0);
        assert_eq!(steady.concealed, 0);
        // The sender falls 580 ms behind: 29 frames to insert.
        let frames = steady.expanded / SPF;
        assert!((25..=35).contains(&frames), "expanded {frames} frames");
        assert!(ms(steady.current_delay) >= ms(steady.target_delay) - 5.5);
        assert!(
            (-1300.0..=-700.0).contains(&steady.drift_ppm),
            "drift {} ppm",
            steady.drift_ppm
        );
    }
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
    // During the pause: up to 5 frames concealed, then silence.
    assert!(spike.concealed <= 5 * SPF, "concealed {}", spike.concealed);
    assert!(spike.silence >= 5 * SPF, "silence {}", spike.silence);
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
    // Stream A (SSRC 1, 20 ms packets) for 10 s, then stream B (SSRC 2, unrelated seq/ts,
    // 30 ms packets) for 10 s, as after a transfer. The receiver drops B's first packet
    // (probation 2), then flags new_stream.
    let pcmu = PayloadType::new(0).unwrap();
    let mut rx = RtpReceiver::new(RtpReceiverConfig::new(RATE, vec![pcmu], None));
    let mut jb = JitterBuffer::new(JitterConfig::new(RATE, FRAME)).unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 512];
    let mut new_streams = 0;
    let mut played_b = Vec::new();
    let mut concealed_after_b = 0;
    // Packets in sending order: (send time, ssrc, seq, ts, ticks, marker).
    let mut sends = Vec::new();
    for j in 0..500u32 {
        sends.push((
            FRAME * j,
            Ssrc::new(1),
            100u16.wrapping_add(j as u16),
            5000 + j * 160,
            160,
        ));
    }
    for k in 0..333u32 {
        sends.push((
            Duration::from_secs(10) + Duration::from_millis(30) * k,
            Ssrc::new(2),
            40_000u16.wrapping_add(k as u16),
            9_000_000 + k * 240,
            240,
        ));
    }
    let mut next = 0;
    for j in 0..1000u32 {
        let now = t0 + FRAME * j + Duration::from_millis(37);
        while let Some(&(send, ssrc, seq, ts, ticks)) = sends.get(next) {
            let arrival = t0 + send + Duration::from_millis(30);
            if arrival > now {
                break;
            }
            next += 1;
            let header = RtpHeader {
                marker: seq == 100 || seq == 40_000,
                payload_type: pcmu,
                seq: SeqNo::new(seq),
                timestamp: RtpTimestamp::new(ts),
                ssrc,
            };
            let body = vec![ssrc.get() as u8; ticks as usize];
            let n = header.write_packet(&body, &mut buf).unwrap();
            if let Ok(r) = rx.receive(arrival, &buf[..n]) {
                if r.new_stream {
                    new_streams += 1;
                    if j > 0 {
                        jb.new_stream();
                    }
                }
                let pushed = jb.push(
                    arrival,
                    r.packet.seq,
                    r.packet.timestamp,
                    r.packet.marker,
                    r.packet.payload,
                    r.packet.payload.len() as u32,
                );
                assert_eq!(pushed, Pushed::Queued);
            }
        }
        let p = jb.pop(now);
        for s in p.segments() {
            match s {
                Segment::Audio { packet, .. } if packet.payload[0] == 2 => {
                    played_b.push((j, packet.seq.get()))
                }
                Segment::Conceal { .. } if !played_b.is_empty() => concealed_after_b += 1,
                _ => {}
            }
        }
    }
    let s = jb.stats();
    report("SSRC change", &s);
    assert_eq!(new_streams, 2);
    assert_eq!(rx.stats().ssrc_changes, 1);
    assert_eq!(rx.stats().probation, 1);
    assert_eq!(s.resyncs, 1);
    // B's first packet, dropped in probation, leaves one frame to conceal.
    assert_eq!(s.concealed, 160);
    assert_eq!(concealed_after_b, 0);
    // B's audio plays from its second packet on, a couple of frames after the switch.
    let (first_slot, first_seq) = played_b[0];
    assert_eq!(first_seq, 40_001);
    assert!(
        (501..=506).contains(&first_slot),
        "B starts at slot {first_slot}"
    );
    assert!(played_b.iter().any(|&(slot, _)| slot == 999));
}

#[test]
fn unannounced_timestamp_and_sequence_jump_resyncs_by_itself() {
    let mut jb = JitterBuffer::new(JitterConfig::new(RATE, FRAME)).unwrap();
    let t0 = Instant::now();
    let mut frames = 0;
    for j in 0..200u32 {
        let (seq, ts) = if j < 100 {
            (SeqNo::new(j as u16), RtpTimestamp::new(j * 160))
        } else {
            (
                SeqNo::new(30_000 + j as u16),
                RtpTimestamp::new(3_000_000_000 + j * 160),
            )
        };
        jb.push(t0 + FRAME * j, seq, ts, false, &j.to_be_bytes(), 160);
        let p = jb.pop(t0 + FRAME * j + Duration::from_millis(15));
        for s in p.segments() {
            if let Segment::Audio { packet, .. } = s {
                frames += 1;
                assert!(u32::from_be_bytes(packet.payload.try_into().unwrap()) <= j);
            }
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
    assert!(end.concealed > 50 * SPF, "concealed {}", end.concealed);
    assert_eq!(
        end.played + end.concealed + end.silence + end.expanded,
        end.frames * SPF + end.removed
    );

    let mut jb = JitterBuffer::new(JitterConfig::new(RATE, FRAME)).unwrap();
    let t0 = Instant::now();
    for _ in 0..3 {
        jb.push(
            t0,
            SeqNo::new(7),
            RtpTimestamp::new(7 * 160),
            false,
            b"x",
            160,
        );
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
                (SeqNo::new(k as u16), RtpTimestamp::new(k * 160))
            } else {
                (SeqNo::new(rng.r#gen()), RtpTimestamp::new(rng.r#gen()))
            };
            let len = rng.gen_range(0..200);
            let ticks = if rng.gen_bool(0.9) {
                rng.gen_range(1..=480)
            } else {
                rng.r#gen()
            };
            jb.push(now, seq, ts, rng.gen_bool(0.05), &vec![0u8; len], ticks);
        } else {
            let p = jb.pop(now);
            let ticks = u64::from(p.ticks());
            if p.adjust() == Adjust::Compress {
                assert!(ticks > SPF && ticks <= 2 * SPF);
            } else {
                assert_eq!(ticks, SPF);
            }
        }
    }
    let s = jb.stats();
    assert_eq!(
        s.played + s.concealed + s.silence + s.expanded,
        s.frames * SPF + s.removed
    );
    assert!(s.buffered <= jb.config().capacity);
    assert!(
        s.target_delay >= Duration::from_millis(20) && s.target_delay <= Duration::from_millis(200)
    );
}
