//! Two-channel call recording: a finished recording is a valid stereo PCM16 WAV file (read
//! back by voxline's own parser and by sox) with the caller on the left and the agent on the
//! right; an unfinished one (the file as a crash leaves it) is readable by sox and is
//! repaired at startup, keeping the audio up to about one second before the crash; repair
//! never changes finished or foreign files.
//!
//! sox is required: without it the tests fail with an install hint.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use voxline::dsp::wav::{self, PLACEHOLDER_DATA_LEN};
use voxline::runtime::recorder::{
    FLUSH_AUDIO, Recorder, RecorderHandle, RepairOutcome, repair_dir,
};

const LEFT_HZ: f64 = 440.0;
const RIGHT_HZ: f64 = 1000.0;
const SOX_MISSING: &str = "sox is needed for the recording tests: apt-get install -y sox";

/// Sample `i` of a tone at `hz` and `rate` with amplitude 8000.
fn tone_sample(hz: f64, rate: u32, i: usize) -> i16 {
    (8000.0 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()) as i16
}

/// Frame `n` (20 ms) of the caller tone and of the agent tone.
fn frame(rate: u32, n: usize) -> (Vec<i16>, Vec<i16>) {
    let len = rate as usize / 50;
    let start = n * len;
    (
        (start..start + len)
            .map(|i| tone_sample(LEFT_HZ, rate, i))
            .collect(),
        (start..start + len)
            .map(|i| tone_sample(RIGHT_HZ, rate, i))
            .collect(),
    )
}

/// Share of the signal's power at `hz` (Goertzel), 0..=1.
fn power_share(x: &[i16], hz: f64, rate: u32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2, mut energy) = (0.0f64, 0.0f64, 0.0f64);
    for &v in x {
        let v = f64::from(v);
        let s = v + c * s1 - s2;
        s2 = s1;
        s1 = s;
        energy += v * v;
    }
    if energy == 0.0 {
        return 0.0;
    }
    2.0 * (s1 * s1 + s2 * s2 - c * s1 * s2) / (x.len() as f64 * energy)
}

/// Asserts the left channel is the caller tone and the right the agent tone.
fn assert_channels(samples_l: &[i16], samples_r: &[i16], rate: u32) {
    assert!(
        power_share(samples_l, LEFT_HZ, rate) > 0.9,
        "left is 440 Hz"
    );
    assert!(
        power_share(samples_l, RIGHT_HZ, rate) < 0.01,
        "no 1 kHz on the left"
    );
    assert!(
        power_share(samples_r, RIGHT_HZ, rate) > 0.9,
        "right is 1 kHz"
    );
    assert!(
        power_share(samples_r, LEFT_HZ, rate) < 0.01,
        "no 440 Hz on the right"
    );
}

fn soxi(flag: &str, path: &Path) -> String {
    let out = Command::new("soxi")
        .arg(flag)
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("{SOX_MISSING} ({e})"));
    assert!(
        out.status.success(),
        "soxi {flag} {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Channel `ch` (1 = left) as decoded by sox, and sox's warnings.
fn sox_channel(path: &Path, ch: u32) -> (Vec<i16>, String) {
    let out = Command::new("sox")
        .arg(path)
        .args(["-t", "raw", "-e", "signed-integer", "-b", "16", "-L", "-"])
        .args(["remix", &ch.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{SOX_MISSING} ({e})"));
    assert!(
        out.status.success(),
        "sox could not read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        wav::pcm16_from_le(&out.stdout),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Checks a finished recording with sox: format, length, and which tone is on which side.
fn check_with_sox(path: &Path, rate: u32, frames: u64) {
    assert_eq!(soxi("-c", path), "2");
    assert_eq!(soxi("-r", path), rate.to_string());
    assert_eq!(soxi("-b", path), "16");
    assert_eq!(soxi("-e", path), "Signed Integer PCM");
    assert_eq!(soxi("-s", path), frames.to_string());
    let secs: f64 = soxi("-D", path).parse().unwrap();
    assert!(
        (secs - frames as f64 / f64::from(rate)).abs() < 1e-3,
        "{secs}"
    );
    let (l, warn_l) = sox_channel(path, 1);
    let (r, _) = sox_channel(path, 2);
    assert_eq!(warn_l, "", "sox warnings");
    assert_eq!(l.len() as u64, frames);
    assert_eq!(r.len() as u64, frames);
    assert_channels(&l, &r, rate);
}

fn record(path: &Path, rate: u32, frames_20ms: usize) -> voxline::runtime::recorder::RecordingInfo {
    let mut rec = Recorder::create(path, rate).unwrap();
    for n in 0..frames_20ms {
        let (c, s) = frame(rate, n);
        rec.write_frame(&c, &s).unwrap();
    }
    rec.finish().unwrap()
}

#[test]
fn three_seconds_of_two_tones_read_back_by_our_parser_and_sox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("call.wav");
    let info = record(&path, 8000, 150);
    assert_eq!(info.frames, 24000);
    assert_eq!(info.duration, Duration::from_secs(3));
    assert_eq!(info.data_bytes, 96000);
    assert_eq!(info.padded_samples, 0);
    assert_eq!(info.sample_rate, 8000);

    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 44 + 96000);
    let w = wav::parse_pcm16(&bytes).unwrap();
    assert!(!w.truncated);
    assert_eq!(w.spec.channels(), 2);
    assert_eq!(w.spec.sample_rate(), 8000);
    assert_eq!(w.frames(), 24000);
    let (l, r) = (w.channel(0), w.channel(1));
    // Sample-exact: what went in on each side comes out on that side.
    let (c0, s0) = frame(8000, 0);
    assert_eq!(l[..160], c0[..]);
    assert_eq!(r[..160], s0[..]);
    assert_channels(&l, &r, 8000);

    check_with_sox(&path, 8000, 24000);
}

#[test]
fn recorder_thread_records_at_16k_and_reports_on_join() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g722.wav");
    let (mut handle, join) = RecorderHandle::spawn(&path, 16000).unwrap();
    let mut sent = 0;
    for n in 0..150 {
        let (c, s) = frame(16000, n);
        // A slow test machine may fill the queue; retry so the test checks the content.
        loop {
            match handle.try_send_frame(&c, &s) {
                Ok(()) => break,
                Err(voxline::runtime::recorder::FrameDropped::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        sent += 1;
    }
    let dropped = handle.dropped_frames();
    handle.finish();
    let info = join.join().unwrap().unwrap();
    assert_eq!(sent, 150);
    assert_eq!(info.dropped_frames, dropped);
    // Dropped frames come back as silence before the retried frame.
    let frames = 48000 + dropped * 320;
    assert_eq!(info.frames, frames);
    assert_eq!(info.sample_rate, 16000);
    if dropped == 0 {
        check_with_sox(&path, 16000, frames);
    }
}

#[test]
fn spawn_reports_a_file_that_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("x.wav");
    let (mut handle, join) = RecorderHandle::spawn(&path, 8000).unwrap();
    let err = join.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(
        handle.try_send_frame(&[0; 160], &[0; 160]),
        Err(voxline::runtime::recorder::FrameDropped::Stopped)
    );
}

#[test]
fn unequal_slices_are_padded_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pad.wav");
    let mut rec = Recorder::create(&path, 8000).unwrap();
    rec.write_frame(&[100; 160], &[200; 150]).unwrap();
    rec.write_frame(&[300; 150], &[400; 160]).unwrap();
    let info = rec.finish().unwrap();
    assert_eq!(info.padded_samples, 20);
    assert_eq!(info.frames, 320);
    let w = wav::parse_pcm16(&std::fs::read(&path).unwrap()).unwrap();
    let (l, r) = (w.channel(0), w.channel(1));
    assert_eq!(&r[148..152], &[200, 200, 0, 0]);
    assert_eq!(&l[160 + 148..160 + 152], &[300, 300, 0, 0]);
    assert_eq!(r[319], 400);
}

#[test]
fn a_dropped_recorder_still_leaves_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dropped.wav");
    {
        let mut rec = Recorder::create(&path, 8000).unwrap();
        for n in 0..25 {
            let (c, s) = frame(8000, n);
            rec.write_frame(&c, &s).unwrap();
        }
    }
    let w = wav::parse_pcm16(&std::fs::read(&path).unwrap()).unwrap();
    assert!(!w.truncated);
    assert_eq!(w.frames(), 4000);
    check_with_sox(&path, 8000, 4000);
}

#[test]
fn crash_leaves_a_sox_readable_file_that_repair_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live.wav.part");
    let crashed = dir.path().join("crashed.wav");
    let torn = dir.path().join("torn.WAV");
    let header_only = dir.path().join("header-only.wav");

    // Record 2.5 s and copy the file as it is on disk at that moment: what a crash (or a
    // power cut after the OS wrote the data) leaves behind.
    let mut rec = Recorder::create(&live, 8000).unwrap();
    std::fs::copy(&live, &header_only).unwrap();
    for n in 0..125 {
        let (c, s) = frame(8000, n);
        rec.write_frame(&c, &s).unwrap();
    }
    std::fs::copy(&live, &crashed).unwrap();
    // A torn write: the crash hit in the middle of a frame.
    let mut bytes = std::fs::read(&live).unwrap();
    bytes.extend_from_slice(&[0x12, 0x34, 0x56]);
    std::fs::write(&torn, &bytes).unwrap();
    rec.finish().unwrap();

    // At most FLUSH_AUDIO was lost.
    let on_disk = std::fs::metadata(&crashed).unwrap().len() - 44;
    let secs = on_disk as f64 / 32000.0;
    assert!(
        secs >= 2.5 - FLUSH_AUDIO.as_secs_f64() - 0.02,
        "only {secs} s on disk"
    );

    // Before repair: the placeholder header, and sox reads the audio that is there.
    let before = wav::parse_header(&std::fs::read(&crashed).unwrap()).unwrap();
    assert_eq!(before.data_len, PLACEHOLDER_DATA_LEN);
    let (l, warnings) = sox_channel(&crashed, 1);
    assert_eq!(l.len() as u64, on_disk / 4);
    assert_eq!(
        warnings, "",
        "sox accepts the unfinished file without complaint"
    );

    let finished = dir.path().join("finished.wav");
    record(&finished, 8000, 50);
    let not_wav = dir.path().join("notes.wav");
    std::fs::write(&not_wav, b"this is not audio").unwrap();
    let other = dir.path().join("other.txt");
    std::fs::write(&other, b"RIFF").unwrap();
    let finished_bytes = std::fs::read(&finished).unwrap();

    let reports = repair_dir(dir.path()).unwrap();
    let names: Vec<String> = reports
        .iter()
        .map(|r| r.path.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        names,
        ["crashed.wav", "header-only.wav", "notes.wav", "torn.WAV"]
    );
    assert_eq!(
        reports[0].outcome,
        RepairOutcome::Repaired {
            declared_data_len: PLACEHOLDER_DATA_LEN,
            data_len: on_disk as u32,
            cut_bytes: 0,
            duration: Duration::from_secs_f64(secs),
        }
    );
    assert!(matches!(
        reports[1].outcome,
        RepairOutcome::Repaired { data_len: 0, .. }
    ));
    assert!(matches!(reports[2].outcome, RepairOutcome::Skipped { .. }));
    assert_eq!(
        reports[3].outcome,
        RepairOutcome::Repaired {
            declared_data_len: PLACEHOLDER_DATA_LEN,
            data_len: on_disk as u32,
            cut_bytes: 3,
            duration: Duration::from_secs_f64(secs),
        }
    );

    // Untouched: the finished recording, the foreign file, the non-WAV file.
    assert_eq!(std::fs::read(&finished).unwrap(), finished_bytes);
    assert_eq!(std::fs::read(&not_wav).unwrap(), b"this is not audio");
    assert_eq!(std::fs::read(&other).unwrap(), b"RIFF");

    for path in [&crashed, &torn] {
        let w = wav::parse_pcm16(&std::fs::read(path).unwrap()).unwrap();
        assert!(!w.truncated);
        assert_eq!(w.frames() as u64, on_disk / 4);
        assert_channels(&w.channel(0), &w.channel(1), 8000);
        check_with_sox(path, 8000, on_disk / 4);
    }
    assert_eq!(soxi("-s", &header_only), "0");

    // Idempotent: a second pass finds nothing to do and changes nothing.
    let crashed_bytes = std::fs::read(&crashed).unwrap();
    let again = repair_dir(dir.path()).unwrap();
    assert_eq!(
        again.len(),
        1,
        "only the non-WAV file is reported: {again:?}"
    );
    assert_eq!(std::fs::read(&crashed).unwrap(), crashed_bytes);
}
