//! SRTP with a real softphone: baresip (its `srtp` module, `mediaenc=srtp-mand`: RTP/SAVP
//! with SDES keys) calls voxline's echo agent with `[media] srtp = "mandatory"`, plays a
//! 700 Hz tone as its microphone, and records what it decodes (the `sndfile` module): it
//! must hear its own tone back, through SRTP both ways. A plain baresip is refused with 488.
//!
//! Needs `baresip` (Debian's `baresip-core`, with its srtp, sndfile, aufile and g711 modules).

use crate::common;
use crate::media_peer;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{LOOPBACK, VoxlineProcess, free_sip_port};
use media_peer::{CallSpy, FRAME, RATE, is_tone, tone, wait_ended};
use voxline::dsp::wav::{Pcm16Spec, canonical_header, parse_pcm16};

/// baresip's loadable modules (Debian/Ubuntu layout).
const BARESIP_MODULES: &str = "/usr/lib/baresip/modules";
const TONE_HZ: f64 = 700.0;
const TONE_SECONDS: usize = 3;

/// A baresip set up in `dir`: the tone as its microphone, what it decodes dumped to
/// `dir/dump`, the `account` line. Returns its configuration directory and SIP port.
fn baresip_conf(dir: &Path, account: &str) -> (PathBuf, u16) {
    let port = free_sip_port();
    let wav_path = dir.join("tone.wav");
    let pcm = tone(TONE_HZ, 8000.0, 0, RATE as usize * TONE_SECONDS);
    let mut wav = canonical_header(
        Pcm16Spec::new(1, RATE).expect("spec"),
        (pcm.len() * 2) as u32,
    )
    .to_vec();
    for s in &pcm {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    fs::write(&wav_path, wav).expect("write tone.wav");
    let dump = dir.join("dump");
    fs::create_dir_all(&dump).expect("dump dir");
    let conf = dir.join("baresip");
    fs::create_dir_all(&conf).expect("config dir");
    for m in ["g711", "aufile", "aubridge", "srtp", "sndfile"] {
        let p = Path::new(BARESIP_MODULES).join(format!("{m}.so"));
        assert!(
            p.is_file(),
            "{} missing: apt-get install baresip",
            p.display()
        );
    }
    fs::write(
        conf.join("config"),
        format!(
            "poll_method\t\tpoll\n\
             sip_listen\t\t{LOOPBACK}:{port}\n\
             net_interface\t\t{LOOPBACK}\n\
             audio_source\t\taufile,{wav}\n\
             audio_player\t\taubridge,nothing\n\
             audio_alert\t\taubridge,nothing\n\
             snd_path\t\t{dump}\n\
             module_path\t\t{BARESIP_MODULES}\n\
             module\t\t\tg711.so\n\
             module\t\t\taufile.so\n\
             module\t\t\taubridge.so\n\
             module\t\t\tsrtp.so\n\
             module\t\t\tsndfile.so\n\
             module_app\t\taccount.so\n\
             module_app\t\tmenu.so\n",
            wav = wav_path.display(),
            dump = dump.display(),
        ),
    )
    .expect("write baresip config");
    fs::write(conf.join("accounts"), format!("{account}\n")).expect("accounts");
    (conf, port)
}

/// Runs baresip with `conf`, dialling `uri` (or waiting to be called), for at most `seconds`;
/// returns its output.
fn run_baresip(conf: &Path, uri: Option<&str>, seconds: u32, until: impl Fn() -> bool) -> String {
    let log = conf.join("baresip.log");
    let mut cmd = Command::new("baresip");
    cmd.arg("-f").arg(conf);
    if let Some(uri) = uri {
        cmd.arg("-e").arg(format!("d {uri}"));
    }
    let mut child = cmd
        .arg("-t")
        .arg(seconds.to_string())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip (apt-get install baresip)");
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 5);
    while child.try_wait().expect("try_wait").is_none() && Instant::now() < deadline {
        if until() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    fs::read_to_string(&log).unwrap_or_default()
}

#[test]
fn baresip_with_mandatory_srtp_hears_its_own_tone_back_from_the_echo_agent() {
    // baresip's offer has AES_CM_128_HMAC_SHA1_80 (first); voxline takes the first it can use.
    hears_its_tone_back("", "AES_CM_128_HMAC_SHA1_80", false);
}

#[test]
fn voxline_calls_baresip_over_aes_gcm_and_baresip_hears_its_tone_back() {
    // voxline offers AEAD_AES_128_GCM alone and baresip answers it: RFC 7714 against
    // libre's implementation (OpenSSL's AES-GCM), both ways, RTP and RTCP.
    hears_its_tone_back(
        "srtp_suites = [\"AEAD_AES_128_GCM\"]\n",
        "AEAD_AES_128_GCM",
        true,
    );
}

/// baresip with `mediaenc=srtp-mand` and the echo agent in a call (baresip calls, or with
/// `voxline_calls` voxline calls it through `POST /calls`), voxline's `[media]` mandatory
/// SRTP plus `media_extra`; the call must use `suite` and baresip hear its tone back.
fn hears_its_tone_back(media_extra: &str, suite: &str, voxline_calls: bool) {
    let dir = tempfile::Builder::new()
        .prefix("voxline-srtp-")
        .tempdir()
        .expect("tempdir");
    let mut vox = VoxlineProcess::spawn(&format!("[media]\nsrtp = \"mandatory\"\n{media_extra}"));
    let spy = CallSpy::start(vox.http_addr());
    let (conf, port) = baresip_conf(
        dir.path(),
        &format!("<sip:tester@{LOOPBACK}>;regint=0;mediaenc=srtp-mand;answermode=auto"),
    );
    let http = vox.http_addr();
    let uri = format!("sip:echo@{}", vox.sip_addr());
    let dial = (!voxline_calls).then_some(uri.as_str());
    let placed = std::sync::OnceLock::new();
    let started = std::sync::OnceLock::new();
    let log = run_baresip(&conf, dial, 8, || {
        if voxline_calls {
            // Once baresip listens, voxline calls it with the echo agent.
            placed.get_or_init(|| {
                std::thread::sleep(Duration::from_millis(500));
                let body = format!(r#"{{"target":"sip:tester@{LOOPBACK}:{port}","agent":"echo"}}"#);
                common::http_request(http, "POST", "/calls", Some(&body), Duration::from_secs(5))
                    .expect("POST /calls")
            });
        }
        // baresip hangs up when its file ends; stop waiting once voxline saw the call end.
        let id = started.get_or_init(|| spy.the_call(Duration::from_secs(8)));
        common::http_get(http, &format!("/calls/{id}"), Duration::from_secs(2))
            .is_ok_and(|(_, body)| body.contains("\"state\":\"ended\""))
    });
    let id = started
        .get()
        .copied()
        .unwrap_or_else(|| spy.the_call(Duration::from_secs(1)));
    let call = wait_ended(http, id, Duration::from_secs(8));
    let report = || format!("call: {call:#}\n---- baresip ----\n{log}");
    assert!(
        call["answered_at"].is_number(),
        "not answered\n{}",
        report()
    );
    assert_eq!(call["media"]["srtp"], true, "{}", report());
    assert_eq!(call["media"]["srtp_suite"], suite, "{}", report());
    // baresip opens the RTCP pinhole with one plain RTCP APP "PINGPONG" before its SRTCP:
    // unauthenticated, it is dropped and counted. Nothing else may fail.
    assert!(
        call["media"]["srtp_auth_failed"]
            .as_u64()
            .is_some_and(|n| n <= 1),
        "{}",
        report()
    );
    assert!(
        call["media"]["rtcp_received"].as_u64().unwrap_or(0) >= 1,
        "{}",
        report()
    );
    assert!(
        call["media"]["packets_received"].as_u64().unwrap_or(0) > 100,
        "{}",
        report()
    );

    // What baresip decoded: its own tone, echoed back through SRTP.
    let dec = fs::read_dir(dir.path().join("dump"))
        .expect("dump dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("baresip dumped no decoded audio\n{}", report()));
    let bytes = fs::read(&dec).expect("read dump");
    let wav = parse_pcm16(&bytes).expect("a WAV");
    let heard = wav.channel(0);
    let windows = heard
        .chunks_exact(FRAME)
        .filter(|w| is_tone(w, TONE_HZ, 2000.0));
    let tone_windows = windows.count();
    // 3 s of tone is 150 windows; allow for the start-up and the hang-up.
    assert!(
        tone_windows >= 100,
        "baresip heard its tone in {tone_windows} of {} windows\n{}",
        heard.len() / FRAME,
        report()
    );
    vox.assert_running();
}

#[test]
fn a_plain_rtp_offer_to_mandatory_srtp_is_refused_with_488() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut vox = VoxlineProcess::spawn("[media]\nsrtp = \"mandatory\"\n");
    let (conf, _) = baresip_conf(dir.path(), &format!("<sip:tester@{LOOPBACK}>;regint=0"));
    let uri = format!("sip:echo@{}", vox.sip_addr());
    let log = run_baresip(&conf, Some(&uri), 4, || false);
    assert!(
        log.contains("488"),
        "baresip was not refused with 488\n{log}"
    );
    let out = vox.output();
    assert!(
        out.lines()
            .any(|l| l.contains("offer rejected") && l.contains("SRTP is mandatory")),
        "no log line with the reason\n{out}"
    );
    vox.assert_running();
}
