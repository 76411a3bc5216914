//! Built-in local agents: Echo returns the caller's audio exactly (delayed when configured);
//! Play plays WAV files of any rate and channel count at the call's rate, keeping pitch and
//! length, loops or hangs up at the end, generates tones at the stated level, and rejects
//! bad files with errors naming them.

use std::path::Path;
use std::time::Duration;

use voxline::agent::{
    AgentAction, Echo, FrameFormat, LocalAgent, Play, PlayError, PlaySource, PlaySpec,
};
use voxline::dsp::wav::{self, Pcm16Spec};

fn format(rate: u32) -> FrameFormat {
    FrameFormat::new(rate, Duration::from_millis(20)).unwrap()
}

/// A deterministic pseudo-random signal (xorshift).
fn noise(n: usize) -> Vec<i16> {
    let mut x: u32 = 0x1234_5678;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 16) as i16
        })
        .collect()
}

fn sine(hz: f64, rate: u32, n: usize, amp: f64) -> Vec<i16> {
    (0..n)
        .map(|i| {
            (amp * (std::f64::consts::TAU * hz * i as f64 / f64::from(rate)).sin()).round() as i16
        })
        .collect()
}

/// Positive-going zero crossings.
fn zero_crossings(x: &[i16]) -> usize {
    x.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count()
}

/// Share of the signal's power at `hz` (Goertzel), 0..=1.
fn power_share(x: &[i16], hz: f64, rate: u32) -> f64 {
    let c = 2.0 * (std::f64::consts::TAU * hz / f64::from(rate)).cos();
    let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for &v in x {
        let v = f64::from(v);
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
        energy += v * v;
    }
    2.0 * (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64 * energy)
}

fn rms(x: &[i16]) -> f64 {
    (x.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / x.len() as f64).sqrt()
}

fn write_wav(path: &Path, channels: u16, rate: u32, interleaved: &[i16]) {
    let spec = Pcm16Spec::new(channels, rate).unwrap();
    let mut bytes = wav::canonical_header(spec, (interleaved.len() * 2) as u32).to_vec();
    for s in interleaved {
        bytes.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// Runs `agent` until it hangs up (or `max` ticks); returns the audio and the ticks that
/// returned Continue.
fn run(agent: &mut dyn LocalAgent, frame: usize, max: usize) -> (Vec<i16>, usize, bool) {
    let mut all = Vec::new();
    let silence = vec![0i16; frame];
    for tick in 0..max {
        let mut out = Vec::new();
        match agent.on_frame(&silence, &mut out) {
            AgentAction::Continue => {
                assert_eq!(out.len(), frame, "tick {tick}: one whole frame");
                all.extend(out);
            }
            AgentAction::HangUp => {
                assert!(out.is_empty(), "nothing sent on the hang-up tick");
                return (all, tick, true);
            }
        }
    }
    (all, max, false)
}

fn play_file(path: &Path, repeat: bool, rate: u32) -> Result<Play, PlayError> {
    Play::new(
        &PlaySpec {
            source: PlaySource::File(path.to_path_buf()),
            repeat,
        },
        format(rate),
    )
}

#[test]
fn echo_returns_the_input_exactly() {
    let mut echo = Echo::new(format(8000), Duration::ZERO);
    let input = noise(160 * 50);
    for frame in input.chunks(160) {
        let mut out = Vec::new();
        assert_eq!(echo.on_frame(frame, &mut out), AgentAction::Continue);
        assert_eq!(out, frame);
    }
}

#[test]
fn echo_delays_by_the_configured_time() {
    let mut echo = Echo::new(format(16000), Duration::from_millis(130));
    assert_eq!(echo.delay_samples(), 2080);
    let input = noise(320 * 50);
    let mut output = Vec::new();
    for frame in input.chunks(320) {
        let mut out = Vec::new();
        echo.on_frame(frame, &mut out);
        assert_eq!(out.len(), 320);
        output.extend(out);
    }
    assert!(output[..2080].iter().all(|&s| s == 0), "silence first");
    assert_eq!(output[2080..], input[..input.len() - 2080]);
}

#[test]
fn a_16k_file_plays_in_an_8k_call_at_the_same_pitch_and_length() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tone16k.wav");
    // 1.5 s of 1 kHz at 16 kHz.
    write_wav(&path, 1, 16000, &sine(1000.0, 16000, 24000, 12000.0));
    let mut play = play_file(&path, false, 8000).unwrap();
    assert_eq!(play.len_samples(), 12000);
    let (audio, ticks, hung_up) = run(&mut play, 160, 200);
    assert!(hung_up);
    assert_eq!(ticks, 75, "1.5 s of 20 ms frames");
    assert_eq!(audio.len(), 12000);
    let body = &audio[400..11600];
    assert!(power_share(body, 1000.0, 8000) > 0.95);
    let zc = zero_crossings(&audio);
    assert!(
        (1495..=1501).contains(&zc),
        "{zc} crossings for 1.5 s of 1 kHz"
    );
    let peak = body.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!((11500..=12500).contains(&peak), "level kept: peak {peak}");
}

#[test]
fn stereo_44k_file_is_mixed_down_and_resampled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stereo.wav");
    // Left: 600 Hz at 10000; right: silence. Mixed down: 600 Hz at 5000.
    let left = sine(600.0, 44100, 44100, 10000.0);
    let interleaved: Vec<i16> = left.iter().flat_map(|&l| [l, 0]).collect();
    write_wav(&path, 2, 44100, &interleaved);
    let mut play = play_file(&path, false, 16000).unwrap();
    let (audio, ticks, hung_up) = run(&mut play, 320, 100);
    assert!(hung_up);
    assert_eq!(ticks, 50);
    assert_eq!(audio.len(), 16000);
    let body = &audio[800..15200];
    assert!(power_share(body, 600.0, 16000) > 0.95);
    assert!(
        (rms(body) - 5000.0 / 2f64.sqrt()).abs() < 100.0,
        "rms {}",
        rms(body)
    );
}

#[test]
fn play_hangs_up_after_the_last_frame_or_loops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short.wav");
    // 4100 samples: 25 whole frames and 100 samples.
    let clip = noise(4100);
    write_wav(&path, 1, 8000, &clip);

    let mut once = play_file(&path, false, 8000).unwrap();
    let (audio, ticks, hung_up) = run(&mut once, 160, 100);
    assert!(hung_up);
    assert_eq!(ticks, 26);
    assert_eq!(audio[..4100], clip[..], "same rate: played bit-exact");
    assert!(audio[4100..].iter().all(|&s| s == 0), "last frame padded");
    let mut out = Vec::new();
    assert_eq!(once.on_frame(&[0; 160], &mut out), AgentAction::HangUp);

    let mut looped = play_file(&path, true, 8000).unwrap();
    let (audio, ticks, hung_up) = run(&mut looped, 160, 200);
    assert!(!hung_up, "a repeated sound never hangs up");
    assert_eq!(ticks, 200);
    for (i, &s) in audio.iter().enumerate() {
        assert_eq!(s, clip[i % clip.len()], "sample {i}: seamless loop");
    }
}

#[test]
fn tone_has_the_stated_level_frequency_and_length() {
    let spec = PlaySpec {
        source: PlaySource::Tone {
            hz: 440.0,
            dbfs: -6.0,
            duration: Duration::from_secs(2),
        },
        repeat: false,
    };
    let mut play = Play::new(&spec, format(8000)).unwrap();
    let (audio, ticks, hung_up) = run(&mut play, 160, 500);
    assert!(hung_up);
    assert_eq!(ticks, 100);
    let expect_peak = 32767.0 * 10f64.powf(-6.0 / 20.0);
    let peak = audio.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!((f64::from(peak) - expect_peak).abs() <= 2.0, "peak {peak}");
    // dBFS per AES17: RMS relative to a full-scale sine's RMS.
    let level = 20.0 * (rms(&audio) * 2f64.sqrt() / 32767.0).log10();
    assert!((level + 6.0).abs() < 0.01, "level {level} dBFS");
    assert_eq!(zero_crossings(&audio), 879, "2 s of 440 Hz");
    assert!(power_share(&audio, 440.0, 8000) > 0.99);

    // -20 dBFS is 10x lower in amplitude.
    let quiet = PlaySpec {
        source: PlaySource::Tone {
            hz: 1000.0,
            dbfs: -20.0,
            duration: Duration::from_millis(500),
        },
        repeat: false,
    };
    let (audio, ticks, _) = run(&mut Play::new(&quiet, format(16000)).unwrap(), 320, 100);
    assert_eq!(ticks, 25);
    let level = 20.0 * (rms(&audio) * 2f64.sqrt() / 32767.0).log10();
    assert!((level + 20.0).abs() < 0.01, "level {level} dBFS");
}

#[test]
fn a_repeated_tone_is_continuous() {
    let spec = PlaySpec {
        source: PlaySource::Tone {
            hz: 440.0,
            dbfs: -3.0,
            // 101 samples: not a whole number of periods, not a whole frame.
            duration: Duration::from_micros(12625),
        },
        repeat: true,
    };
    let mut play = Play::new(&spec, format(8000)).unwrap();
    assert_eq!(play.len_samples(), 101);
    let (audio, _, hung_up) = run(&mut play, 160, 100);
    assert!(!hung_up);
    let amp = 32767.0 * 10f64.powf(-3.0 / 20.0);
    let max_step = amp * std::f64::consts::TAU * 440.0 / 8000.0 + 2.0;
    for w in audio.windows(2) {
        assert!(f64::from(w[1] - w[0]).abs() <= max_step, "jump {w:?}");
    }
    assert!(power_share(&audio, 440.0, 8000) > 0.99);
}

#[test]
fn bad_wav_files_give_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, bytes: Option<&[u8]>, expect: &str| {
        let path = dir.path().join(name);
        if let Some(b) = bytes {
            std::fs::write(&path, b).unwrap();
        }
        let err = play_file(&path, false, 8000).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(name), "{msg:?} names the file");
        assert!(msg.contains(expect), "{msg:?} says {expect:?}");
        err
    };
    assert!(matches!(
        check("missing.wav", None, "No such file"),
        PlayError::Read { .. }
    ));
    assert!(matches!(
        check(
            "text.wav",
            Some(b"hello, this is not audio at all"),
            "not a RIFF/WAVE"
        ),
        PlayError::Wav { .. }
    ));

    let mut pcm8 = wav::canonical_header(Pcm16Spec::new(1, 8000).unwrap(), 4).to_vec();
    pcm8[34] = 8; // bits per sample
    pcm8[32] = 1; // block align
    pcm8.extend_from_slice(&[1, 2, 3, 4]);
    assert!(matches!(
        check("pcm8.wav", Some(&pcm8), "not 16-bit PCM"),
        PlayError::Wav { .. }
    ));

    let mut float = wav::canonical_header(Pcm16Spec::new(1, 8000).unwrap(), 0).to_vec();
    float[20] = 3; // WAVE_FORMAT_IEEE_FLOAT
    check("float.wav", Some(&float), "format tag 0x0003");

    let header = wav::canonical_header(Pcm16Spec::new(1, 8000).unwrap(), 0);
    check("cut.wav", Some(&header[..30]), "truncated");
    assert!(matches!(
        check("empty.wav", Some(&header), "no audio"),
        PlayError::Empty { .. }
    ));
}

#[test]
fn no_prefix_of_a_wav_file_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("good.wav");
    write_wav(&path, 2, 8000, &noise(200));
    let good = std::fs::read(&path).unwrap();
    for len in 0..good.len() {
        let r = Play::from_wav_bytes(&path, &good[..len], false, format(8000));
        assert_eq!(r.is_ok(), len >= 48, "prefix {len}");
    }
    // Garbage sizes everywhere: errors or audio, never a panic.
    for pos in 4..44 {
        let mut bad = good.clone();
        bad[pos] = 0xff;
        bad[pos.saturating_sub(1)] = 0xff;
        let _ = Play::from_wav_bytes(&path, &bad, false, format(8000));
    }
}
