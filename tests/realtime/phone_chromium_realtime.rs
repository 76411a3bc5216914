//! A browser calls a realtime AI agent: headless Chromium (tests/browser/phone.mjs) opens
//! `/phone?agent=ai&autocall=1` with a fake microphone looping 1 s of a loud tone and 2 s of
//! silence; the agent is backed by the mock Realtime server. The caller's speech reaches the
//! agent (the mock hears audio and detects speech), the agent's reply comes back to the page
//! (its level in the page), and the page shows the reply's transcript line, read live from
//! `/phone/transcript`.

use crate::common;
use crate::realtime_e2e_support::RealtimeE2e;

use voxline_mock_realtime::MockConfig;

#[test]
fn chromium_talks_to_a_realtime_agent_and_shows_its_transcript() {
    let reply = "Hello from the agent on the page";
    let h = RealtimeE2e::start(
        MockConfig {
            reply_text: reply.into(),
            pace: true,
            ..MockConfig::default()
        },
        "",
        "",
        "",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let wav = dir.path().join("speech.wav");
    let rate = 48_000u32;
    let pcm: Vec<i16> = (0..rate * 3)
        .map(|i| {
            if i < rate {
                (12_000.0
                    * (2.0 * std::f64::consts::PI * 300.0 * f64::from(i) / f64::from(rate)).sin())
                    as i16
            } else {
                0
            }
        })
        .collect();
    common::write_wav(&wav, &pcm, rate);
    let url = format!("http://{}/phone?agent=ai&autocall=1", h.vox.http_addr());
    let page = common::phone_page(&url, &wav, 8);
    let report = || format!("{}\nvoxline:\n{}", page.log, h.vox.output());
    let result = &page.result;
    assert_eq!(result["state"], "connected", "{}", report());
    // The caller's speech reached the agent.
    assert!(
        h.mock.speech_starts() >= 1,
        "the mock detected no speech ({} bytes of audio)\n{}",
        h.mock.audio_received_bytes().len(),
        report()
    );
    // The agent's audio reached the page.
    let level = result["maxRemoteLevel"].as_f64().unwrap_or(0.0);
    assert!(level > 0.02, "the page heard {level:.4}\n{}", report());
    // Its words are in the page's transcript.
    let lines = result["lines"].as_array().cloned().unwrap_or_default();
    assert!(
        lines
            .iter()
            .any(|l| l["role"] == "agent" && l["text"].as_str().is_some_and(|t| t.contains(reply))),
        "no agent line in the page: {lines:?}\n{}",
        report()
    );
}
