//! Signals for the voice chain's bench and tests: speech from espeak-ng in several voices,
//! noises (white, pink, babble, music on hold), and a telephone echo path (bulk delay, echo
//! return loss, a short impulse response, G.711 both ways, a path change mid-call).
//! Deterministic: the noises and impulse responses come from a seeded generator, and
//! espeak-ng renders the same text the same way.
//!
//! Shared by `tools/dsp_bench` and the tests (`#[path]`), so it depends only on std and
//! voxline's G.711.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

use voxline::media::codec::g711::{ulaw_decode, ulaw_encode};

/// The bench's sample rate (a G.711 call).
pub const RATE: usize = 8000;
/// Samples in one 20 ms frame.
pub const FRAME: usize = 160;

/// Voices the speech comes in (espeak-ng names).
pub const VOICES: &[&str] = &[
    "en-us",
    "en-gb+f3",
    "en-gb-scotland",
    "en-us+m3",
    "en+f4",
    "en-029",
];

/// What the agent says (the echo's source) and what callers say.
pub const SENTENCES: &[&str] = &[
    "Hello, thank you for calling. How can I help you today?",
    "Your account balance is one thousand two hundred and thirty four dollars and fifty six cents.",
    "Please hold the line while I transfer you to the billing department.",
    "I can book that appointment for Tuesday at three in the afternoon, does that work for you?",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    "She sells sea shells by the sea shore; Peter Piper picked a peck of pickled peppers.",
    "Let me look that up for you. One moment please, this may take a few seconds.",
    "Your order number is four seven two nine, and it will arrive on Friday morning.",
];

/// What callers say over the agent (never what the agent says: an echo is the agent's own
/// words, a caller's are others).
pub const CALLER_SENTENCES: &[&str] = &[
    "Wait, wait, that is not what I asked for.",
    "No, I said my name is Jonathan Miller, with two L's.",
    "Hold on, can you repeat the last part?",
    "Actually I would rather speak to somebody in billing.",
    "Sorry, I did not catch that, what was the amount?",
    "Yes, yes, that's right, go ahead.",
];

/// A small deterministic generator (64-bit LCG).
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next() + 1.0) / 2.0) * n as f32) as usize % n.max(1)
    }
}

/// Speaks `text` in `voice` as 8 kHz 16-bit telephone-band audio (300–3400 Hz) with peaks
/// at -6 dBFS: espeak-ng, resampled and filtered by sox.
pub fn speak(voice: &str, text: &str) -> Result<Vec<i16>, String> {
    speak_at(voice, text, 165, -6)
}

/// [`speak`] at `words_per_minute`, with peaks at `peak_db` dBFS.
pub fn speak_at(
    voice: &str,
    text: &str,
    words_per_minute: u32,
    peak_db: i32,
) -> Result<Vec<i16>, String> {
    let wpm = words_per_minute.to_string();
    let peak = peak_db.to_string();
    let espeak = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &wpm, "--stdout", text])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("espeak-ng: {e} (apt-get install -y espeak-ng sox)"))?;
    if !espeak.status.success() || espeak.stdout.is_empty() {
        return Err(format!(
            "espeak-ng -v {voice} failed: {}",
            String::from_utf8_lossy(&espeak.stderr)
        ));
    }
    let mut sox = Command::new("sox")
        .args([
            "-t",
            "wav",
            "-",
            "-t",
            "raw",
            "-r",
            "8000",
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-c",
            "1",
            "-L",
            "-",
            "sinc",
            "300-3400",
            "gain",
            "-n",
            &peak,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("sox: {e} (apt-get install -y espeak-ng sox)"))?;
    let mut stdin = sox.stdin.take().ok_or("sox: no stdin")?;
    let wav = espeak.stdout;
    let writer = std::thread::spawn(move || stdin.write_all(&wav));
    let out = sox.wait_with_output().map_err(|e| format!("sox: {e}"))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "sox failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect())
}

/// At least `seconds` of speech: sentences in turn, starting at `first`, in `voice`, with
/// `gap_ms` of silence after each.
pub fn talk(voice: &str, first: usize, seconds: f32, gap_ms: usize) -> Result<Vec<i16>, String> {
    let mut out = Vec::new();
    let mut k = first;
    while (out.len() as f32) < seconds * RATE as f32 {
        out.extend(speak(voice, SENTENCES[k % SENTENCES.len()])?);
        out.extend(std::iter::repeat_n(0i16, gap_ms * RATE / 1000));
        k += 1;
    }
    out.truncate((seconds * RATE as f32) as usize);
    Ok(out)
}

/// Scales `x` to `dbfs` RMS over its active 20 ms frames (within 30 dB of the loudest), so
/// that speech with pauses and steady noise are levelled alike.
pub fn set_level(x: &mut [f32], dbfs: f32) {
    let on = active_frames_within(x, 30.0);
    let (mut e, mut n) = (0f64, 0usize);
    for (f, a) in x.chunks(FRAME).zip(&on) {
        if *a {
            e += energy(f);
            n += f.len();
        }
    }
    if n == 0 || e <= 0.0 {
        return;
    }
    let rms = (e / n as f64).sqrt() as f32;
    let target = 32768.0 * 10f32.powf(dbfs / 20.0);
    for s in x {
        *s *= target / rms;
    }
}

/// White noise, `len` samples at `dbfs` RMS.
pub fn white(rng: &mut Rng, len: usize, dbfs: f32) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len).map(|_| rng.next()).collect();
    set_level(&mut v, dbfs);
    v
}

/// Pink noise (Paul Kellet's filter), band-limited to the telephone band's top by the
/// filter's own roll-off, at `dbfs` RMS.
pub fn pink(rng: &mut Rng, len: usize, dbfs: f32) -> Vec<f32> {
    let mut b = [0f32; 7];
    let mut v: Vec<f32> = (0..len)
        .map(|_| {
            let w = rng.next();
            b[0] = 0.99886 * b[0] + w * 0.0555179;
            b[1] = 0.99332 * b[1] + w * 0.0750759;
            b[2] = 0.96900 * b[2] + w * 0.153_852;
            b[3] = 0.86650 * b[3] + w * 0.3104856;
            b[4] = 0.55000 * b[4] + w * 0.5329522;
            b[5] = -0.7616 * b[5] - w * 0.0168980;
            let p = b.iter().sum::<f32>() + w * 0.5362;
            b[6] = w * 0.115926;
            p
        })
        .collect();
    set_level(&mut v, dbfs);
    v
}

/// Babble: four talkers at once (different voices and sentences), at `dbfs` RMS.
pub fn babble(len: usize, dbfs: f32) -> Result<Vec<f32>, String> {
    let mut v = vec![0f32; len];
    for (i, voice) in VOICES.iter().take(4).enumerate() {
        let t = talk(voice, i * 2 + 1, len as f32 / RATE as f32, 50)?;
        for (d, s) in v.iter_mut().zip(t) {
            *d += f32::from(s);
        }
    }
    set_level(&mut v, dbfs);
    Ok(v)
}

/// Music on hold: a chord progression of soft organ-like tones (three partials per note)
/// changing every 500 ms, at `dbfs` RMS.
pub fn music(len: usize, dbfs: f32) -> Vec<f32> {
    const CHORDS: [[f32; 3]; 4] = [
        [261.6, 329.6, 392.0],
        [220.0, 261.6, 329.6],
        [174.6, 220.0, 261.6],
        [196.0, 246.9, 293.7],
    ];
    let mut v: Vec<f32> = (0..len)
        .map(|n| {
            let t = n as f32 / RATE as f32;
            let chord = CHORDS[(n / (RATE / 2)) % CHORDS.len()];
            chord
                .iter()
                .map(|f| {
                    (1..=3)
                        .map(|h| (2.0 * std::f32::consts::PI * f * h as f32 * t).sin() / h as f32)
                        .sum::<f32>()
                })
                .sum()
        })
        .collect();
    set_level(&mut v, dbfs);
    v
}

/// G.711 μ-law there and back: what a far end receives of `x`.
pub fn g711(x: f32) -> i16 {
    ulaw_decode(ulaw_encode(x.clamp(-32768.0, 32767.0) as i16))
}

/// A line echo path: bulk delay, then a short impulse response (a main tap and a decaying
/// tail over 4 ms), scaled to the echo return loss.
#[derive(Debug, Clone)]
pub struct EchoPath {
    delay: usize,
    ir: Vec<f32>,
}

impl EchoPath {
    /// A path of `delay_ms` bulk delay and `erl_db` echo return loss, its impulse response
    /// drawn from `rng`.
    pub fn new(rng: &mut Rng, delay_ms: usize, erl_db: f32) -> EchoPath {
        let taps = 32;
        let mut ir: Vec<f32> = (0..taps)
            .map(|k| {
                let decay = (-(k as f32) / 6.0).exp();
                if k == 2 {
                    1.0
                } else {
                    0.35 * rng.next() * decay
                }
            })
            .collect();
        let norm = ir.iter().map(|h| h * h).sum::<f32>().sqrt();
        let gain = 10f32.powf(-erl_db / 20.0);
        for h in &mut ir {
            *h *= gain / norm;
        }
        EchoPath {
            delay: delay_ms * RATE / 1000,
            ir,
        }
    }

    /// The echo at sample `n` of what was sent, `sent`.
    pub fn echo_at(&self, sent: &[i16], n: usize) -> f32 {
        let mut y = 0f32;
        for (k, h) in self.ir.iter().enumerate() {
            if let Some(i) = n.checked_sub(self.delay + k) {
                y += h * f32::from(sent[i]);
            }
        }
        y
    }
}

/// One call's signals, aligned by frame tick: what voxline sent (the reference, as the far
/// end decodes it) and what came back (the capture: echo plus the caller plus noise, G.711
/// coded), with the caller's clean speech and the echo alone for the metrics.
#[derive(Debug, Clone)]
pub struct Call {
    /// What voxline sent, G.711 decoded.
    pub sent: Vec<i16>,
    /// What voxline received.
    pub capture: Vec<i16>,
    /// The caller's speech alone (before noise and coding).
    pub near: Vec<f32>,
    /// The echo alone.
    pub echo: Vec<f32>,
    /// The noise alone.
    pub noise: Vec<f32>,
}

impl Call {
    /// Builds a call: `agent` is what voxline sends, `paths` the echo paths in turn (each
    /// from its start sample), `near` the caller's speech, `noise` the line noise.
    pub fn new(agent: &[f32], paths: &[(usize, EchoPath)], near: &[f32], noise: &[f32]) -> Call {
        let len = agent.len();
        let sent: Vec<i16> = agent.iter().map(|s| g711(*s)).collect();
        let mut echo = vec![0f32; len];
        for (n, e) in echo.iter_mut().enumerate() {
            let path = paths
                .iter()
                .rev()
                .find(|(from, _)| *from <= n)
                .map(|(_, p)| p);
            if let Some(p) = path {
                *e = p.echo_at(&sent, n);
            }
        }
        let at = |v: &[f32], n: usize| v.get(n).copied().unwrap_or(0.0);
        let capture = (0..len)
            .map(|n| g711(echo[n] + at(near, n) + at(noise, n)))
            .collect();
        Call {
            sent,
            capture,
            near: (0..len).map(|n| at(near, n)).collect(),
            echo,
            noise: (0..len).map(|n| at(noise, n)).collect(),
        }
    }

    /// Frames in the call.
    pub fn frames(&self) -> usize {
        self.sent.len() / FRAME
    }
}

/// Sum of squares.
pub fn energy<T: Copy + Into<f64>>(x: &[T]) -> f64 {
    x.iter().map(|s| (*s).into().powi(2)).sum()
}

/// 10·log10(a / b), with floors so silence does not give infinities.
pub fn db(a: f64, b: f64) -> f64 {
    10.0 * (a.max(1e-3) / b.max(1e-3)).log10()
}

/// The frames in which `x` is active (energy within 30 dB of its loudest 20 ms frame).
pub fn active_frames(x: &[f32]) -> Vec<bool> {
    active_frames_within(x, 30.0)
}

/// The 20 ms frames of `x` whose energy is within `range_db` of its loudest.
pub fn active_frames_within(x: &[f32], range_db: f64) -> Vec<bool> {
    let e: Vec<f64> = x.chunks(FRAME).map(energy).collect();
    let max = e.iter().copied().fold(0.0, f64::max);
    let floor = max * 10f64.powf(-range_db / 10.0);
    e.iter().map(|v| max > 0.0 && *v > floor).collect()
}
