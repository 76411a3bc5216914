//! Per-frame cost of every codec: encode and decode of one 20 ms frame, and concealment of a
//! lost 20 ms frame. Run with `cargo bench --bench codecs` (add `-- --quick` for a short run).

// Benchmark setup fails by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::f64::consts::PI;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use voxline::media::codec::{decoder_for, encoder_for};
use voxline::sdp::{Codec, NegotiatedCodec, PayloadType};

/// Frames cycled through, so the codecs see changing input as in a call.
const FRAMES: usize = 50;

struct Case {
    name: &'static str,
    codec: NegotiatedCodec,
}

fn cases() -> Vec<Case> {
    let nc = |codec: Codec, pt: u8, fmtp: Option<&str>| NegotiatedCodec {
        codec,
        payload_type: PayloadType::new(pt).expect("valid payload type"),
        clock_rate: codec.clock_rate(),
        channels: codec.channels(),
        fmtp: fmtp.map(str::to_owned),
    };
    vec![
        Case {
            name: "pcmu",
            codec: nc(Codec::Pcmu, 0, None),
        },
        Case {
            name: "pcma",
            codec: nc(Codec::Pcma, 8, None),
        },
        Case {
            name: "g722",
            codec: nc(Codec::G722, 9, None),
        },
        Case {
            name: "opus_8k",
            codec: nc(
                Codec::Opus,
                111,
                Some("useinbandfec=1;maxplaybackrate=8000;sprop-maxcapturerate=8000"),
            ),
        },
        Case {
            name: "opus_48k",
            codec: nc(Codec::Opus, 111, Some("useinbandfec=1")),
        },
    ]
}

/// Speech-like test audio: a pitch that changes every frame with two formant-ish partials and
/// a little noise.
fn audio(rate: u32, frame: usize) -> Vec<Vec<i16>> {
    let mut phase = 0.0f64;
    let mut noise = 1u32;
    (0..FRAMES)
        .map(|f| {
            let pitch = 110.0 + 15.0 * (f % 9) as f64;
            (0..frame)
                .map(|_| {
                    phase += 2.0 * PI * pitch / f64::from(rate);
                    noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    let n = f64::from((noise >> 16) as u16) / 65536.0 - 0.5;
                    (6000.0 * phase.sin()
                        + 3000.0 * (5.0 * phase).sin()
                        + 1500.0 * (17.0 * phase).sin()
                        + 600.0 * n) as i16
                })
                .collect()
        })
        .collect()
}

fn encoded(case: &Case) -> (Vec<Vec<i16>>, Vec<Vec<u8>>) {
    let mut enc = encoder_for(&case.codec, 20).expect("encoder");
    let frames = audio(enc.sample_rate(), enc.frame_samples());
    let payloads = frames
        .iter()
        .map(|f| {
            let mut p = Vec::new();
            enc.encode(f, &mut p).expect("encode");
            p
        })
        .collect();
    (frames, payloads)
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_20ms");
    for case in cases() {
        let mut enc = encoder_for(&case.codec, 20).expect("encoder");
        let frames = audio(enc.sample_rate(), enc.frame_samples());
        let mut out = Vec::with_capacity(2048);
        let mut i = 0;
        group.bench_function(case.name, |b| {
            b.iter(|| {
                out.clear();
                enc.encode(black_box(&frames[i % FRAMES]), &mut out)
                    .expect("encode");
                i += 1;
                black_box(out.len())
            })
        });
    }
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_20ms");
    for case in cases() {
        let (_, payloads) = encoded(&case);
        let mut dec = decoder_for(&case.codec).expect("decoder");
        let mut out = Vec::with_capacity(2048);
        let mut i = 0;
        group.bench_function(case.name, |b| {
            b.iter(|| {
                out.clear();
                dec.decode(black_box(&payloads[i % FRAMES]), &mut out)
                    .expect("decode");
                i += 1;
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// One good frame then one concealed frame per iteration: the concealment cost includes its
/// start-of-loss work (pitch search for G.711/G.722). Subtract `decode_20ms` for concealment
/// alone.
fn bench_conceal(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_then_conceal_20ms");
    for case in cases() {
        let (frames, payloads) = encoded(&case);
        let samples = frames[0].len();
        let mut dec = decoder_for(&case.codec).expect("decoder");
        let mut out = Vec::with_capacity(4096);
        let mut i = 0;
        group.bench_function(case.name, |b| {
            b.iter(|| {
                out.clear();
                dec.decode(black_box(&payloads[i % FRAMES]), &mut out)
                    .expect("decode");
                dec.conceal(samples, &mut out).expect("conceal");
                i += 1;
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_encode, bench_decode, bench_conceal);
criterion_main!(benches);
