//! voxline-dsp-candidates: the candidates issue 11 named for each stage of the voice chain,
//! measured side by side in one run on the voice chain bench's signals (espeak-ng speech,
//! simulated telephone echo paths, noises; `tools/dsp_bench/signals.rs`).
//!
//! - Echo cancellation: sonora's AEC3 (voxline's), the `aec3` crate's AEC3, speexdsp's MDF
//!   (alone, and with its residual echo suppressor): ERLE, near-end attenuation in double
//!   talk, µs per 20 ms frame.
//! - Noise suppression: sonora's suppressor (voxline's) and RNNoise (`nnnoiseless`, 48 kHz):
//!   SNR gain and µs per frame.
//! - VAD: `earshot` (16 kHz; voxline's), sonora's RNN VAD and RNNoise's voice probability:
//!   onset latency, share of speech frames found, frames taken for speech on echo residue,
//!   noise and music on hold, µs per frame.
//!
//! ```text
//! cargo run --release -p voxline-dsp-candidates -- --seed 1
//! ```

#[path = "../../../tools/dsp_bench/measure.rs"]
mod measure;
#[path = "../../../tools/dsp_bench/signals.rs"]
mod signals;
mod speex;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use voxline::dsp::aec::EchoCanceller;
use voxline::dsp::ns::{NoiseSuppressor, NsLevel};
use voxline::dsp::resample::Resampler;
use voxline::dsp::speech::{MIN_LEVEL_DBFS, level_dbfs};
use voxline::dsp::vad::Vad;

use measure::{
    agent_pool, caller_trial, erle_windows, looped, median, onset_block, settles, snr_of, to_f32,
};
use signals::{Call, EchoPath, FRAME, RATE, Rng, active_frames, energy};

#[derive(Debug, Parser)]
#[command(about = "Compares the candidate echo cancellers, noise suppressors and VADs")]
struct Args {
    /// Seed for noises and echo paths.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A 16 kHz (`aec3`, `earshot`) or 48 kHz (RNNoise) stage run on 8 kHz frames: resampled up
/// and back, with the output delayed by the resamplers' lag.
struct Rate {
    up: Resampler,
    up2: Resampler,
    down: Resampler,
    a: Vec<i16>,
    b: Vec<i16>,
    out: VecDeque<i16>,
    tmp: Vec<i16>,
}

impl Rate {
    fn new(to: u32) -> Result<Rate> {
        Ok(Rate {
            up: Resampler::new(RATE as u32, to)?,
            up2: Resampler::new(RATE as u32, to)?,
            down: Resampler::new(to, RATE as u32)?,
            a: Vec::new(),
            b: Vec::new(),
            out: VecDeque::new(),
            tmp: Vec::new(),
        })
    }

    /// Takes processed high-rate samples back to 8 kHz.
    fn back(&mut self, processed: &[i16]) -> Result<()> {
        self.tmp.clear();
        self.down.process(processed, &mut self.tmp)?;
        self.out.extend(self.tmp.iter().copied());
        Ok(())
    }

    /// Fills `frame` with the oldest 8 kHz output (silence while the pipeline fills).
    fn pop(&mut self, frame: &mut [i16]) {
        for s in frame.iter_mut() {
            *s = self.out.pop_front().unwrap_or(0);
        }
    }
}

// ---- Echo cancellers. ----

trait Canceller {
    fn process(&mut self, reference: &[i16], capture: &mut [i16]) -> Result<()>;
}

struct Sonora(EchoCanceller);

impl Canceller for Sonora {
    fn process(&mut self, reference: &[i16], capture: &mut [i16]) -> Result<()> {
        Ok(self.0.process(reference, capture)?)
    }
}

/// The `aec3` crate's linear pipeline at 16 kHz with only its high-pass filter and AEC3
/// (noise suppression, gain control and post filter off), as sonora's is run.
struct Aec3Crate {
    p: aec3::pipelines::linear::LinearPipeline,
    rate: Rate,
    fr: Vec<f32>,
    fc: Vec<f32>,
    fo: Vec<f32>,
    o16: Vec<i16>,
}

const AEC3_RATE: u32 = 16_000;
const AEC3_BLOCK: usize = 160;

impl Aec3Crate {
    fn new() -> Result<Aec3Crate> {
        let f = aec3::nodes::audio::AudioFormat::ten_ms(AEC3_RATE, 1);
        let p = aec3::pipelines::linear::builder(f, f)
            .enable_noise_suppression(false)
            .enable_gain_controller2(false)
            .enable_post_filter(false)
            .build()
            .map_err(|e| anyhow::anyhow!("aec3: {e:?}"))?;
        Ok(Aec3Crate {
            p,
            rate: Rate::new(AEC3_RATE)?,
            fr: vec![0.0; AEC3_BLOCK],
            fc: vec![0.0; AEC3_BLOCK],
            fo: vec![0.0; AEC3_BLOCK],
            o16: Vec::new(),
        })
    }
}

impl Canceller for Aec3Crate {
    fn process(&mut self, reference: &[i16], capture: &mut [i16]) -> Result<()> {
        let r = &mut self.rate;
        r.up.process(reference, &mut r.a)?;
        r.up2.process(capture, &mut r.b)?;
        self.o16.clear();
        while r.a.len() >= AEC3_BLOCK && r.b.len() >= AEC3_BLOCK {
            for (d, s) in self.fr.iter_mut().zip(r.a.drain(..AEC3_BLOCK)) {
                *d = f32::from(s) / 32768.0;
            }
            for (d, s) in self.fc.iter_mut().zip(r.b.drain(..AEC3_BLOCK)) {
                *d = f32::from(s) / 32768.0;
            }
            self.p
                .handle_render_frame(&self.fr)
                .map_err(|e| anyhow::anyhow!("aec3 render: {e:?}"))?;
            self.p
                .process_capture_frame(&self.fc, &mut self.fo)
                .map_err(|e| anyhow::anyhow!("aec3 capture: {e:?}"))?;
            self.o16.extend(
                self.fo
                    .iter()
                    .map(|v| (v * 32768.0).clamp(-32768.0, 32767.0) as i16),
            );
        }
        r.back(&self.o16)?;
        r.pop(capture);
        Ok(())
    }
}

struct Speex(speex::SpeexEcho);

impl Canceller for Speex {
    fn process(&mut self, reference: &[i16], capture: &mut [i16]) -> Result<()> {
        self.0.process(reference, capture);
        Ok(())
    }
}

/// speexdsp's filter: 500 ms at 8 kHz, the delay range the issue asks for (it has no
/// delay estimator, so the filter must span the whole echo).
const SPEEX_TAPS: usize = RATE / 2;

fn canceller(name: &str) -> Result<Box<dyn Canceller>> {
    Ok(match name {
        "sonora AEC3 (voxline)" => Box::new(Sonora(EchoCanceller::new(RATE as u32, FRAME)?)),
        "aec3 crate" => Box::new(Aec3Crate::new()?),
        "speexdsp MDF" => Box::new(Speex(
            speex::SpeexEcho::new(FRAME, SPEEX_TAPS, RATE as u32, false).context("speexdsp")?,
        )),
        _ => Box::new(Speex(
            speex::SpeexEcho::new(FRAME, SPEEX_TAPS, RATE as u32, true).context("speexdsp")?,
        )),
    })
}

const CANCELLERS: [&str; 4] = [
    "sonora AEC3 (voxline)",
    "aec3 crate",
    "speexdsp MDF",
    "speexdsp MDF + residual suppressor",
];

/// Runs a canceller over a call: the output and the CPU time.
fn cancel(name: &str, call: &Call) -> Result<(Vec<i16>, Duration)> {
    let mut c = canceller(name)?;
    let mut out = Vec::with_capacity(call.capture.len());
    let mut frame = [0i16; FRAME];
    let mut cpu = Duration::ZERO;
    for k in 0..call.frames() {
        let r = k * FRAME..(k + 1) * FRAME;
        frame.copy_from_slice(&call.capture[r.clone()]);
        let t = Instant::now();
        c.process(&call.sent[r], &mut frame)?;
        cpu += t.elapsed();
        out.extend_from_slice(&frame);
    }
    Ok((out, cpu))
}

// ---- Noise suppressors. ----

trait Suppressor {
    fn process(&mut self, frame: &mut [i16]) -> Result<()>;
}

struct SonoraNs(NoiseSuppressor);

impl Suppressor for SonoraNs {
    fn process(&mut self, frame: &mut [i16]) -> Result<()> {
        Ok(self.0.process(frame)?)
    }
}

/// RNNoise at 48 kHz (its only rate), 10 ms frames, samples on the 16-bit scale; `vad`
/// keeps the voice probability of the frames it finished in the last call.
struct RnNoise {
    st: Box<nnnoiseless::DenoiseState<'static>>,
    rate: Rate,
    fin: Vec<f32>,
    fout: Vec<f32>,
    o48: Vec<i16>,
    vad: f32,
}

const RNNOISE_RATE: u32 = 48_000;

impl RnNoise {
    fn new() -> Result<RnNoise> {
        Ok(RnNoise {
            st: nnnoiseless::DenoiseState::new(),
            rate: Rate::new(RNNOISE_RATE)?,
            fin: vec![0.0; nnnoiseless::DenoiseState::FRAME_SIZE],
            fout: vec![0.0; nnnoiseless::DenoiseState::FRAME_SIZE],
            o48: Vec::new(),
            vad: 0.0,
        })
    }
}

impl Suppressor for RnNoise {
    fn process(&mut self, frame: &mut [i16]) -> Result<()> {
        let n = nnnoiseless::DenoiseState::FRAME_SIZE;
        let r = &mut self.rate;
        r.up.process(frame, &mut r.a)?;
        self.o48.clear();
        self.vad = 0.0;
        while r.a.len() >= n {
            for (d, s) in self.fin.iter_mut().zip(r.a.drain(..n)) {
                *d = f32::from(s);
            }
            let p = self.st.process_frame(&mut self.fout, &self.fin);
            self.vad = self.vad.max(p);
            self.o48
                .extend(self.fout.iter().map(|v| v.clamp(-32768.0, 32767.0) as i16));
        }
        r.back(&self.o48)?;
        r.pop(frame);
        Ok(())
    }
}

// ---- VADs: one speech probability per 20 ms frame (the highest of the blocks that ended
// in it). ----

trait Detector {
    fn prob(&mut self, frame: &[i16]) -> Result<f32>;
}

/// earshot at 16 kHz, as voxline runs it (`voxline::dsp::vad`).
struct Earshot(Vad);

impl Detector for Earshot {
    fn prob(&mut self, frame: &[i16]) -> Result<f32> {
        Ok(self.0.process(frame)?)
    }
}

/// WebRTC's RNN VAD (sonora-agc2), as voxline ran it before: the highest probability of a
/// frame's 10 ms blocks, never reset.
struct RnnVad {
    vad: sonora_agc2::vad_wrapper::VoiceActivityDetectorWrapper,
    input: Vec<f32>,
}

/// sonora's RNN VAD block: 10 ms.
const RNN_BLOCK: usize = RATE / 100;

impl Detector for RnnVad {
    fn prob(&mut self, frame: &[i16]) -> Result<f32> {
        let mut p = 0f32;
        for c in frame.chunks_exact(RNN_BLOCK) {
            for (d, s) in self.input.iter_mut().zip(c) {
                *d = f32::from(*s);
            }
            p = p.max(self.vad.analyze(&self.input));
        }
        Ok(p)
    }
}

/// RNNoise's voice probability (its suppression output unused here).
struct RnVad(RnNoise);

impl Detector for RnVad {
    fn prob(&mut self, frame: &[i16]) -> Result<f32> {
        let mut f = frame.to_vec();
        self.0.process(&mut f)?;
        Ok(self.0.vad)
    }
}

const VADS: [&str; 3] = ["earshot (voxline)", "sonora RNN VAD", "RNNoise VAD"];

fn detector(name: &str) -> Result<Box<dyn Detector>> {
    Ok(match name {
        "earshot (voxline)" => Box::new(Earshot(Vad::new(RATE as u32, FRAME)?)),
        "sonora RNN VAD" => Box::new(RnnVad {
            vad: sonora_agc2::vad_wrapper::VoiceActivityDetectorWrapper::with_reset_period(
                i32::MAX,
                sonora_simd::detect_backend(),
                RATE as i32,
            ),
            input: vec![0.0; RNN_BLOCK],
        }),
        _ => Box::new(RnVad(RnNoise::new()?)),
    })
}

/// Per-frame probabilities of a VAD over `x`, and its CPU time. As in voxline's chain,
/// frames quieter than [`MIN_LEVEL_DBFS`] are not given to the VAD (probability 0).
fn probs(name: &str, x: &[i16]) -> Result<(Vec<f32>, Duration)> {
    let mut d = detector(name)?;
    let mut cpu = Duration::ZERO;
    let mut v = Vec::with_capacity(x.len() / FRAME);
    for f in x.chunks_exact(FRAME) {
        let t = Instant::now();
        v.push(if level_dbfs(f) < MIN_LEVEL_DBFS {
            0.0
        } else {
            d.prob(f)?
        });
        cpu += t.elapsed();
    }
    Ok((v, cpu))
}

/// The probability from which a frame counts as voiced, for every VAD (each one's
/// documented default).
const THRESHOLD: f32 = 0.5;

fn us_per_frame(cpu: Duration, frames: usize) -> f64 {
    cpu.as_secs_f64() * 1e6 / frames.max(1) as f64
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut rng = Rng(args.seed);
    println!("# voxline-dsp-candidates (seed {})\n", args.seed);
    let pool = agent_pool()?;
    let len = RATE * 20;

    // ---- Echo cancellation: ERLE on the nine linear paths, and double talk. ----
    println!("## Echo cancellation (20 s per case, echo-only, G.711 both ways)\n");
    println!(
        "| canceller | cases with ERLE ≥ 25 dB by 2 s (from s, each case) | median ERLE after 2 s (worst case) | near-end attenuation in double talk dB | µs per 20 ms frame |"
    );
    println!("|---|---|---|---|---|");
    let mut cases = Vec::new();
    for d in [50, 200, 400] {
        for erl in [6.0, 10.0, 20.0] {
            let agent = looped(&pool, rng.below(pool.len()), len);
            let path = EchoPath::new(&mut rng, d, erl);
            cases.push(Call::new(&agent, &[(0, path)], &[], &[]));
        }
    }
    let mut doubles = Vec::new();
    for (i, voice) in signals::VOICES.iter().take(3).enumerate() {
        let agent = looped(&pool, rng.below(pool.len()), len);
        let mut near = vec![0f32; RATE * 8];
        let mut n = to_f32(&signals::talk(voice, i + 3, 10.0, 200).map_err(anyhow::Error::msg)?);
        signals::set_level(&mut n, -20.0);
        near.extend(n);
        let path = EchoPath::new(&mut rng, 200, 10.0);
        let noise = signals::white(&mut rng, len, -70.0);
        doubles.push(Call::new(&agent, &[(0, path)], &near, &noise));
    }
    for name in CANCELLERS {
        let (mut by2, mut medians, mut cpu, mut frames) = (0, Vec::new(), Duration::ZERO, 0);
        let mut late = Vec::new();
        for call in &cases {
            let (out, t) = cancel(name, call)?;
            cpu += t;
            frames += call.frames();
            let w = erle_windows(call, &out);
            let settled = settles(&w, 0.0, 25.0);
            if settled.is_some_and(|t| t <= 2.0) {
                by2 += 1;
            }
            late.push(settled.map_or("never".into(), |t| format!("{t:.1}")));
            medians.push(median(
                w.iter()
                    .filter(|(t, _)| *t >= 2.0)
                    .map(|(_, e)| *e)
                    .collect(),
            ));
        }
        let (mut dt_in, mut dt_out) = (0.0, 0.0);
        for call in &doubles {
            let (out, _) = cancel(name, call)?;
            let near_on = signals::active_frames_within(&call.near, 60.0);
            let echo_on = signals::active_frames_within(&call.echo, 60.0);
            for k in 100..call.frames() {
                if near_on[k] && echo_on[k] {
                    let r = k * FRAME..(k + 1) * FRAME;
                    dt_in += energy(&call.near[r.clone()]);
                    dt_out += energy(&out[r]);
                }
            }
        }
        let worst = medians.iter().copied().fold(f64::INFINITY, f64::min);
        println!(
            "| {name} | {by2} of {} ({}) | {:.1} ({worst:.1}) | {:.1} | {:.1} |",
            cases.len(),
            late.join(", "),
            median(medians),
            signals::db(dt_in, dt_out),
            us_per_frame(cpu, frames)
        );
    }

    // ---- Noise suppression: SNR gain. ----
    println!("\n## Noise suppression: SNR gain dB (speech at -20 dBFS plus noise)\n");
    println!(
        "| suppressor | white 5 dB | white 10 dB | pink 5 dB | pink 10 dB | babble 5 dB | babble 10 dB | µs per 20 ms frame |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut near = to_f32(&signals::talk("en-us", 2, 20.0, 600).map_err(anyhow::Error::msg)?);
    signals::set_level(&mut near, -20.0);
    let on = active_frames(&near);
    let silent = vec![0f32; len];
    let babble = signals::babble(len, 0.0).map_err(anyhow::Error::msg)?;
    let mut noisy = Vec::new();
    for base in [
        signals::white(&mut rng, len, 0.0),
        signals::pink(&mut rng, len, 0.0),
        babble,
    ] {
        for snr in [5.0f32, 10.0] {
            let mut noise = base.clone();
            signals::set_level(&mut noise, -20.0 - snr);
            noisy.push(Call::new(&silent, &[], &near, &noise));
        }
    }
    for name in [
        "sonora NS moderate (voxline)",
        "sonora NS very_high (voxline)",
        "RNNoise",
    ] {
        let (mut cells, mut cpu, mut frames) = (Vec::new(), Duration::ZERO, 0);
        for call in &noisy {
            let mut s: Box<dyn Suppressor> = match name {
                "RNNoise" => Box::new(RnNoise::new()?),
                n => Box::new(SonoraNs(NoiseSuppressor::new(
                    RATE as u32,
                    FRAME,
                    if n.contains("moderate") {
                        NsLevel::Moderate
                    } else {
                        NsLevel::VeryHigh
                    },
                )?)),
            };
            let mut out = call.capture.clone();
            for f in out.chunks_exact_mut(FRAME) {
                let t = Instant::now();
                s.process(f)?;
                cpu += t.elapsed();
                frames += 1;
            }
            let gain = snr_of(&to_f32(&out), &on) - snr_of(&to_f32(&call.capture), &on);
            cells.push(format!("{gain:+.1}"));
        }
        println!(
            "| {name} | {} | {:.1} |",
            cells.join(" | "),
            us_per_frame(cpu, frames)
        );
    }

    // ---- VAD. ----
    println!("\n## VAD (threshold {THRESHOLD} for all)\n");
    println!(
        "| VAD | onset latency ms, median (worst) of 12 | speech frames found | voiced on echo residue | white -40 dBFS | white -30 dBFS | pink -35 dBFS | pink -25 dBFS | music on hold -20 dBFS | µs per 20 ms frame |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    // Callers' speech over a quiet line, 12 trials.
    let mut trials = Vec::new();
    for t in 0..12 {
        let mut x = caller_trial(t, RATE)?;
        x.extend(vec![0f32; RATE]);
        let noise = signals::white(&mut rng, x.len(), -70.0);
        trials.push(Call::new(&vec![0f32; x.len()], &[], &x, &noise));
    }
    // Echo residue: sonora's output on 2 minutes of echo-only input (200 ms / 10 dB).
    let long = RATE * 120;
    let agent = looped(&pool, rng.below(pool.len()), long);
    let path = EchoPath::new(&mut rng, 200, 10.0);
    let echo_call = Call::new(
        &agent,
        &[(0, path)],
        &[],
        &signals::white(&mut rng, long, -70.0),
    );
    let (residue, _) = cancel(CANCELLERS[0], &echo_call)?;
    let quiet = vec![0f32; long];
    let mut others = Vec::new();
    for noise in [
        signals::white(&mut rng, long, -40.0),
        signals::white(&mut rng, long, -30.0),
        signals::pink(&mut rng, long, -35.0),
        signals::pink(&mut rng, long, -25.0),
        signals::music(long, -20.0),
    ] {
        others.push(Call::new(&quiet, &[], &[], &noise).capture);
    }
    for name in VADS {
        let (mut lat, mut found, mut active, mut cpu, mut frames) =
            (Vec::new(), 0usize, 0usize, Duration::ZERO, 0usize);
        for call in &trials {
            let (p, t) = probs(name, &call.capture)?;
            cpu += t;
            frames += p.len();
            let onset = onset_block(&call.near);
            if let Some(k) = p
                .iter()
                .enumerate()
                .skip(onset / 2)
                .position(|(_, v)| *v >= THRESHOLD)
            {
                let k = k + onset / 2;
                lat.push(((k + 1) * 20).saturating_sub(onset * 10) as f64);
            }
            for (v, a) in p.iter().zip(active_frames(&call.near)) {
                if a {
                    active += 1;
                    found += usize::from(*v >= THRESHOLD);
                }
            }
        }
        let worst = lat.iter().copied().fold(0.0, f64::max);
        let missed = trials.len() - lat.len();
        let mut cells = vec![
            format!(
                "{:.0} ({worst:.0}){}",
                median(lat),
                if missed > 0 {
                    format!(", {missed} missed")
                } else {
                    String::new()
                }
            ),
            format!("{:.0} %", found as f64 * 100.0 / active.max(1) as f64),
        ];
        for x in std::iter::once(&residue).chain(others.iter()) {
            let (p, t) = probs(name, x)?;
            cpu += t;
            frames += p.len();
            let v = p.iter().filter(|v| **v >= THRESHOLD).count();
            cells.push(format!("{:.1} %", v as f64 * 100.0 / p.len().max(1) as f64));
        }
        println!(
            "| {name} | {} | {:.1} |",
            cells.join(" | "),
            us_per_frame(cpu, frames)
        );
    }
    Ok(())
}
