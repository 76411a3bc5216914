//! A caller whose line echoes the agent (200 ms later, 6 dB quieter, G.711 both ways) talks
//! to a realtime agent: voxline cancels the echo before the backend hears it, so the mock's
//! server VAD never takes it for the caller, and the agent's long reply plays to the end
//! with no barge-in. The control run, with the voice chain off, shows the same echo does
//! reach the server's VAD (so the first test could fail).

use crate::realtime_e2e_support;

use std::time::Duration;

use realtime_e2e_support::{
    RealtimeE2e, echoing_caller, frame_of, is_agent_audio, speech, spoken_reply,
};
use voxline_mock_realtime::MockConfig;

/// Frames in the call: the caller's question, the reply (8 s), and a margin.
const FRAMES: usize = 650;
const REPLY_S: f32 = 8.0;

/// Runs the echoing call; returns the mock, how many agent packets the caller got, and the
/// call (`GET /calls`) just before the hang-up.
fn echo_call(tables: &str) -> (RealtimeE2e, usize, serde_json::Value) {
    let mock = MockConfig {
        reply_pcm24k: spoken_reply(REPLY_S),
        ..MockConfig::default()
    };
    let h = RealtimeE2e::start(mock, "", "", tables);
    let (mut sip, mut rtp, to) = h.call("1000");
    let question = speech("en-gb+f3", "Hello, I have a question about my bill please.");
    let got = echoing_caller(&mut rtp, to, FRAMES, 10, 6.0, |k, _| {
        frame_of(&question, k, 10)
    });
    let call = live_call(&h);
    assert_eq!(sip.bye(), 200);
    let played = got.iter().filter(|p| is_agent_audio(p)).count();
    (h, played, call)
}

#[test]
fn the_agents_echo_never_interrupts_its_reply() {
    let (h, played, call) = echo_call("");
    let dsp = &call["dsp"];
    assert!(
        h.wait(Duration::from_secs(2), |m| m.speech_starts() >= 1),
        "the caller's question was never heard"
    );
    // The reply played to the end: 8 s is 400 frames (a few may be lost on a loaded machine).
    assert!(
        played >= (REPLY_S * 50.0) as usize * 95 / 100,
        "only {played} frames of the reply played"
    );
    assert!(
        h.mock.truncations().is_empty(),
        "the reply was cut: {:?}",
        h.mock.truncations()
    );
    // The server heard the question and nothing else: not the echo.
    assert_eq!(h.mock.speech_starts(), 1, "the server's VAD heard the echo");
    let log = h.vox.output();
    assert!(
        !log.lines().any(|l| l.contains("barge-in")),
        "a barge-in: {log}"
    );
    // The chain's figures on the call and in the metrics.
    assert!(dsp["frames"].as_u64().unwrap() >= 500, "{dsp}");
    assert!(
        dsp["stage_us"]["echo_cancellation"].as_u64().unwrap() > 0,
        "{dsp}"
    );
    assert!(dsp["stage_us"]["vad"].as_u64().unwrap() > 0, "{dsp}");
    assert_eq!(dsp["stage_us"]["noise_suppression"], 0, "{dsp}");
    assert_eq!(dsp["local_barge_ins"], 0, "{dsp}");
    assert_eq!(dsp["errors"], 0, "{dsp}");
    let (_, metrics) =
        crate::common::http_get(h.vox.http_addr(), "/metrics", Duration::from_secs(5))
            .expect("metrics");
    let aec = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("voxline_dsp_stage_seconds_total{stage=\"echo_cancellation\"} ")
        })
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(aec > 0.0, "{metrics}");
    // The call's record keeps the final figures.
    let path = format!("/calls/{}", call["record_id"].as_str().expect("record id"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let record = loop {
        let (code, r) = crate::common::http_json(
            h.vox.http_addr(),
            "GET",
            &path,
            None,
            Duration::from_secs(5),
        );
        if code == 200 && !r["dsp"].is_null() && !r["ended_at"].is_null() {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "{path}: {code} {r}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let frames = record["dsp"]["frames"].as_u64().unwrap();
    assert!(frames >= dsp["frames"].as_u64().unwrap(), "{record}");
}

/// The `dsp` object of the (only) live call in `GET /calls` (updated every second).
pub(crate) fn call_dsp(h: &RealtimeE2e) -> serde_json::Value {
    live_call(h)["dsp"].clone()
}

/// The (only) live call in `GET /calls`.
fn live_call(h: &RealtimeE2e) -> serde_json::Value {
    let (code, calls) = crate::common::http_json(
        h.vox.http_addr(),
        "GET",
        "/calls",
        None,
        Duration::from_secs(5),
    );
    assert_eq!(code, 200);
    calls[0].clone()
}

#[test]
fn without_the_chain_the_same_echo_reaches_the_servers_vad() {
    let (h, _, call) = echo_call("[agent.dsp]\nenabled = false\n");
    let dsp = &call["dsp"];
    assert!(dsp.is_null(), "the chain ran: {dsp}");
    assert!(
        h.wait(Duration::from_secs(2), |m| m.speech_starts() >= 2),
        "the server's VAD did not hear the echo: the echo test above proves nothing \
         ({} speech starts)",
        h.mock.speech_starts()
    );
}
