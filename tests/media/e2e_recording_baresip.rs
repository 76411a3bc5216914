//! Call recording with a real softphone: baresip calls voxline's echo agent and plays a
//! WAV file (3 s of a 700 Hz tone keyed on and off in an irregular pattern, through its
//! `aufile` audio source) as its microphone; it hangs up when the file ends. voxline's
//! recording of the call (data_dir/recordings, path from `GET /calls/{id}`) must then hold
//! that keyed tone on the LEFT channel (the caller), and its echo on the RIGHT channel (the
//! agent): the same on/off pattern, a frame or so later.
//!
//! Needs `baresip` (Debian/Ubuntu package `baresip`, with its modules g711, aufile,
//! aubridge, menu and account). Fails, with the install command, if it is missing.

use crate::common;
use crate::media_peer;

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::{LOOPBACK, VoxlineProcess, free_sip_port};
use media_peer::{CallSpy, FRAME, RATE, is_tone, tone, wait_ended};
use voxline::dsp::wav::{Pcm16Spec, canonical_header, parse_pcm16};

const BARESIP_MISSING: &str =
    "baresip not found: install it with `apt-get install baresip` (baresip-core is enough)";
/// baresip's loadable modules (Debian/Ubuntu layout).
const BARESIP_MODULES: &str = "/usr/lib/baresip/modules";
/// The tone baresip plays.
const TONE_HZ: f64 = 700.0;
/// The keying of the tone, in 20 ms windows: (on, windows), 150 windows = 3 s in all.
const PATTERN: [(bool, usize); 7] = [
    (true, 20),
    (false, 10),
    (true, 40),
    (false, 15),
    (true, 25),
    (false, 10),
    (true, 30),
];
/// Its length.
const TONE_SECONDS: usize = 3;
/// Longest a baresip run may take before the test kills it.
const BARESIP_TIMEOUT: Duration = Duration::from_secs(15);

#[test]
fn the_recording_holds_the_callers_wav_left_and_the_echo_right() {
    match Command::new("baresip")
        .arg("-h")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Err(e) if e.kind() == ErrorKind::NotFound => panic!("{BARESIP_MISSING}"),
        Err(e) => panic!("cannot run baresip: {e}"),
        Ok(_) => {}
    }
    for m in [
        "g711.so",
        "aufile.so",
        "aubridge.so",
        "menu.so",
        "account.so",
    ] {
        let path = Path::new(BARESIP_MODULES).join(m);
        assert!(
            path.is_file(),
            "{} missing: {BARESIP_MISSING}",
            path.display()
        );
    }

    let dir = tempfile::Builder::new()
        .prefix("voxline-baresip-")
        .tempdir()
        .expect("tempdir");
    let data_dir = dir.path().join("data");
    let mut vox = VoxlineProcess::spawn(&format!("data_dir = \"{}\"\n", data_dir.display()));
    let spy = CallSpy::start(vox.http_addr());

    // The caller's "microphone": 8 kHz mono 16-bit, as aufile requires for G.711.
    let wav_path = dir.path().join("tone.wav");
    let keyed = keying();
    assert_eq!(keyed.len(), TONE_SECONDS * 50);
    let pcm: Vec<i16> = tone(TONE_HZ, 8000.0, 0, RATE as usize * TONE_SECONDS)
        .chunks(FRAME)
        .zip(&keyed)
        .flat_map(|(w, &on)| w.iter().map(move |&s| if on { s } else { 0 }))
        .collect();
    let mut wav = canonical_header(
        Pcm16Spec::new(1, RATE).expect("spec"),
        (pcm.len() * 2) as u32,
    )
    .to_vec();
    for s in &pcm {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    fs::write(&wav_path, wav).expect("write tone.wav");

    // baresip's configuration: loopback only, G.711, the WAV as source, no sound card.
    let conf = dir.path().join("baresip");
    fs::create_dir(&conf).expect("config dir");
    let sip_port = free_sip_port();
    fs::write(
        conf.join("config"),
        format!(
            "poll_method\t\tpoll\n\
             sip_listen\t\t{LOOPBACK}:{sip_port}\n\
             net_interface\t\t{LOOPBACK}\n\
             audio_source\t\taufile,{wav}\n\
             audio_player\t\taubridge,nothing\n\
             audio_alert\t\taubridge,nothing\n\
             module_path\t\t{BARESIP_MODULES}\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\taubridge.so\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n",
            wav = wav_path.display(),
        ),
    )
    .expect("write baresip config");
    fs::write(
        conf.join("accounts"),
        format!("<sip:tester@{LOOPBACK}>;regint=0\n"),
    )
    .expect("write baresip accounts");

    // Dial; baresip hangs up when the file ends (and quits after 10 s whatever happens).
    let out_path = dir.path().join("baresip.log");
    let mut child = Command::new("baresip")
        .arg("-f")
        .arg(&conf)
        .arg("-e")
        .arg(format!("d sip:echo@{}", vox.sip_addr()))
        .arg("-t")
        .arg("10")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("log file"))
        .stderr(Stdio::from(
            fs::File::options()
                .append(true)
                .open(&out_path)
                .expect("log file"),
        ))
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            ErrorKind::NotFound => panic!("{BARESIP_MISSING}"),
            _ => panic!("cannot start baresip: {e}"),
        });
    let baresip_log = || fs::read_to_string(&out_path).unwrap_or_default();
    let id = spy.the_call(Duration::from_secs(8));
    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(8));
    // baresip quits by itself (-t 10); do not wait for it longer than needed.
    let deadline = Instant::now() + BARESIP_TIMEOUT;
    while child.try_wait().expect("try_wait baresip").is_none() && Instant::now() < deadline {
        if call["state"] == "ended" {
            // The call is over: baresip has nothing left to do.
            let _ = child.kill();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let report = || format!("call: {call:#}\n---- baresip ----\n{}", baresip_log());
    assert_eq!(call["state"], "ended", "{}", report());
    assert_eq!(call["codec"], "PCMU", "{}", report());

    // The recording, once finished (its header patched).
    let path = call["recording"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording path\n{}", report()))
        .to_string();
    assert!(
        Path::new(&path).starts_with(data_dir.join("recordings")),
        "recording {path} is not under data_dir/recordings"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let rec = loop {
        if let Ok(bytes) = fs::read(&path)
            && let Ok(w) = parse_pcm16(&bytes)
            && !w.truncated
        {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "recording {path} not finished within 5 s\n{}",
            report()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rec.spec.channels(), 2, "the recording is not stereo");
    assert_eq!(rec.spec.sample_rate(), RATE);
    let (left, right) = (rec.channel(0), rec.channel(1));
    let seconds = left.len() as f64 / f64::from(RATE);
    // baresip 1.0 hangs up at the end of the file; a version that does not quits at -t 10.
    assert!(
        (2.5..=12.0).contains(&seconds),
        "the recording lasts {seconds:.2} s for a {TONE_SECONDS} s file\n{}",
        report()
    );

    // Which 20 ms windows of each channel hold the tone (at a fair level).
    let windows = |ch: &[i16]| -> Vec<bool> {
        ch.chunks_exact(FRAME)
            .map(|w| is_tone(w, TONE_HZ, 2000.0))
            .collect()
    };
    let (left_on, right_on) = (windows(&left), windows(&right));
    // Left: the file's keying, from when baresip's audio reached voxline (up to 1 s in).
    let (shift, agree) = best_shift(&keyed, &left_on, 50);
    assert!(
        agree * 100 >= keyed.len() * 90,
        "left (caller) channel: the file's tone pattern matches in only {agree} of {} \
         windows (best shift {shift})\nfile:  {}\nleft:  {}\n{}",
        keyed.len(),
        show(&keyed),
        show(&left_on),
        report()
    );
    // Right: the same pattern again, a few frames later: the echo.
    let echoed = &left_on[shift..(shift + keyed.len()).min(left_on.len())];
    let (lag, agree) = best_shift(echoed, right_on.get(shift..).unwrap_or(&[]), 10);
    assert!(
        agree * 100 >= echoed.len() * 90,
        "right (agent) channel: the echo matches the caller in only {agree} of {} windows \
         (best lag {lag})\nleft:  {}\nright: {}\n{}",
        echoed.len(),
        show(&left_on),
        show(&right_on),
        report()
    );
    // And the echo is the caller's audio itself: at the right lag the two channels
    // correlate almost perfectly.
    let corr = (lag.saturating_sub(1) * FRAME..=(lag + 1) * FRAME)
        .map(|l| correlation(&left, &right, l))
        .fold(f64::MIN, f64::max);
    assert!(
        corr > 0.9,
        "the right channel is not the left one delayed (best correlation {corr:.3})"
    );
    vox.assert_running();
}

/// The tone keying as one flag per 20 ms window.
fn keying() -> Vec<bool> {
    PATTERN
        .iter()
        .flat_map(|&(on, n)| std::iter::repeat_n(on, n))
        .collect()
}

/// The shift `d` in `0..=max` for which `pattern[i] == seen[i + d]` holds most often, and
/// how often (windows past the end of `seen` count as off).
fn best_shift(pattern: &[bool], seen: &[bool], max: usize) -> (usize, usize) {
    (0..=max)
        .map(|d| {
            let agree = pattern
                .iter()
                .enumerate()
                .filter(|&(i, &p)| seen.get(i + d).copied().unwrap_or(false) == p)
                .count();
            (d, agree)
        })
        .max_by_key(|&(d, agree)| (agree, std::cmp::Reverse(d)))
        .unwrap_or((0, 0))
}

/// A window pattern as text: `#` tone, `.` no tone.
fn show(w: &[bool]) -> String {
    w.iter().map(|&on| if on { '#' } else { '.' }).collect()
}

/// Normalised correlation of `a[i]` with `b[i + lag]`.
fn correlation(a: &[i16], b: &[i16], lag: usize) -> f64 {
    let n = a.len().min(b.len().saturating_sub(lag));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (f64::from(a[i]), f64::from(b[i + lag]));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}
