//! Jitter buffer cost per frame: one `push` and one `pop` of a 20 ms, 160-byte G.711 frame,
//! on a steady stream and on one with 0-60 ms jitter and 2 % loss (seeded).

// Benchmark setup fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::jitter::{JitterBuffer, JitterConfig, Segment};
use voxline::media::rtp::{RtpTimestamp, SeqNo};

const FRAME: Duration = Duration::from_millis(20);

/// A pre-computed schedule of (arrival offset, frame index), sorted by arrival.
fn schedule(n: u32, jitter_ms: f64, loss: f64) -> Vec<(Duration, u32)> {
    let mut rng = StdRng::seed_from_u64(42);
    let mut v = Vec::with_capacity(n as usize);
    for k in 0..n {
        if loss > 0.0 && rng.gen_bool(loss) {
            continue;
        }
        let extra = if jitter_ms > 0.0 {
            rng.gen_range(0.0..jitter_ms)
        } else {
            0.0
        };
        v.push((
            FRAME * k + Duration::from_secs_f64((30.0 + extra) / 1000.0),
            k,
        ));
    }
    v.sort();
    v
}

/// Runs the whole schedule: one pop per frame, pushes as packets arrive.
fn run(jb: &mut JitterBuffer, t0: Instant, sched: &[(Duration, u32)], payload: &[u8]) -> u64 {
    let mut next = 0;
    let mut played = 0u64;
    let frames = sched.last().map_or(0, |&(_, k)| k + 1);
    for j in 0..frames {
        let now = t0 + Duration::from_millis(7) + FRAME * j;
        while let Some(&(a, k)) = sched.get(next) {
            if t0 + a > now {
                break;
            }
            jb.push(
                t0 + a,
                SeqNo::new(k as u16),
                RtpTimestamp::new(k.wrapping_mul(160)),
                false,
                payload,
                160,
            );
            next += 1;
        }
        for s in jb.pop(now).segments() {
            if let Segment::Audio { len, .. } = s {
                played += u64::from(len);
            }
        }
    }
    played
}

fn bench(c: &mut Criterion) {
    const N: u32 = 3000;
    let payload = [0x55u8; 160];
    let mut group = c.benchmark_group("jitter");
    group.throughput(criterion::Throughput::Elements(u64::from(N)));
    for (name, jitter, loss) in [("steady", 0.0, 0.0), ("jitter60_loss2", 60.0, 0.02)] {
        let sched = schedule(N, jitter, loss);
        group.bench_function(format!("push_pop_3000_frames_{name}"), |b| {
            b.iter(|| {
                let mut jb =
                    JitterBuffer::new(JitterConfig::new(8000, FRAME)).expect("valid config");
                black_box(run(&mut jb, Instant::now(), &sched, &payload))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
