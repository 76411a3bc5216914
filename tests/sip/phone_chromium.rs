//! The browser phone in a real browser: headless Chromium (Debian's `chromium`, driven by
//! playwright-core from npm, `tests/browser/phone.mjs`) opens voxline's `/phone?agent=echo&
//! autocall=1` with a fake microphone playing a WAV of a 440 Hz tone. The page dials over SIP
//! over WebSocket on the HTTP origin (`/sip`), Chromium's WebRTC stack does ICE and DTLS-SRTP
//! with voxline (Opus, the browser calls' first choice), and:
//!
//! * the caller's audio reaches the agent: the recording's caller channel holds the tone;
//! * the agent's audio comes back to the page: the echo's level, as the page reads it from
//!   its receiver's statistics (`inbound-rtp` `audioLevel`).
//!
//! Needs `chromium` (apt-get install chromium) and `npm ci` in tests/browser (`.ci/run` does
//! both); fails with those instructions otherwise.

use crate::common;

use std::time::Duration;

use common::{VoxlineProcess, http_get};
use voxline::dsp::wav::parse_pcm16;

/// Seconds the page stays in the call.
const TALK_SECONDS: u32 = 4;

#[test]
fn chromium_calls_the_echo_agent_from_the_phone_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("tone.wav");
    // 3 s of a 440 Hz tone (the fake microphone loops it).
    let pcm: Vec<i16> = (0..48_000 * 3)
        .map(|i| {
            (9000.0 * (2.0 * std::f64::consts::PI * 440.0 * f64::from(i) / 48_000.0).sin()) as i16
        })
        .collect();
    common::write_wav(&wav, &pcm, 48_000);
    let data = dir.path().join("data");
    let mut vox = VoxlineProcess::spawn(&format!("data_dir = \"{}\"\n", data.display()));
    let url = format!("http://{}/phone?agent=echo&autocall=1", vox.http_addr());
    let page = common::phone_page(&url, &wav, TALK_SECONDS);
    let report = || format!("{}\nvoxline:\n{}", page.log, vox.output());
    let result = &page.result;
    assert_eq!(result["state"], "connected", "{}", report());
    // The echo came back to the page (the receiver's inbound-rtp audioLevel; silence is ~0).
    let level = result["maxRemoteLevel"].as_f64().unwrap_or(0.0);
    assert!(level > 0.02, "the page heard {level:.4}\n{}", report());

    // The caller's audio reached voxline and the agent: the call's record and recording.
    let call_id = result["callId"].as_str().expect("callId").to_owned();
    let call = finished_record(&vox, &call_id, &report);
    assert_eq!(call["codec"], "opus", "{call}");
    assert_caller_heard(&call, 2000, &report);
    vox.assert_running();
}

/// The record of `call_id` once it has ended.
pub fn finished_record(
    vox: &VoxlineProcess,
    call_id: &str,
    report: &dyn Fn() -> String,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, body) =
            http_get(vox.http_addr(), "/records", Duration::from_secs(5)).expect("records");
        let records: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        let found = records
            .as_array()
            .or_else(|| records["records"].as_array())
            .and_then(|a| a.iter().find(|r| r["call_id"] == call_id).cloned());
        if let Some(r) = found.filter(|r| !r["ended_at"].is_null()) {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no finished record for {call_id}: {body}\n{}",
            report()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The call's recording holds the caller's audio: more than a tenth of its caller channel
/// is louder than `loud`.
pub fn assert_caller_heard(call: &serde_json::Value, loud: u16, report: &dyn Fn() -> String) {
    let path = call["recording_path"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording: {call}\n{}", report()))
        .to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let rec = loop {
        if let Ok(b) = std::fs::read(&path)
            && let Ok(w) = parse_pcm16(&b)
            && !w.truncated
        {
            break w;
        }
        assert!(std::time::Instant::now() < deadline, "recording unfinished");
        std::thread::sleep(Duration::from_millis(100));
    };
    let caller = rec.channel(0);
    let n = caller.iter().filter(|s| s.unsigned_abs() > loud).count();
    assert!(
        n > caller.len() / 10,
        "the caller channel of {path} is mostly silent ({n} of {} samples louder than {loud})\n{}",
        caller.len(),
        report()
    );
}
