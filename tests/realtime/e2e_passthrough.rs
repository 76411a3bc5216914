//! G.711 passthrough, caller → backend: a caller on PCMU talks to a realtime agent, and the
//! mock Realtime server receives the caller's RTP payload bytes untouched (`audio/pcmu` on
//! the wire, no decode, no resample). Each frame carries μ-law `0x7F` ("negative zero"),
//! which a decode/encode round trip would turn into `0xFF`, and its own index, so the bytes
//! can only match if they travelled unchanged and in order. The API key appears nowhere in
//! voxline's (DEBUG) log. This is the path with the voice chain off (`[agent.dsp] enabled =
//! false`); with it on, the backend gets the processed audio re-encoded.

use crate::realtime_e2e_support;

use std::time::Duration;

use realtime_e2e_support::{KEY, RealtimeE2e, find, speech_frame};
use voxline_mock_realtime::MockConfig;

#[test]
fn caller_pcmu_reaches_the_backend_byte_for_byte() {
    let h = RealtimeE2e::start(
        MockConfig::default(),
        "",
        "",
        "[agent.dsp]\nenabled = false\n",
    );
    let (mut sip, mut rtp, to) = h.call("1000");
    let frames: Vec<Vec<u8>> = (0..60)
        .map(|k| {
            let mut f = speech_frame(k);
            f[0] = 0x7F;
            f[1] = k as u8;
            f
        })
        .collect();
    rtp.stream(to, frames.len(), |k| frames[k].clone());
    // Every frame from 5 to 54 must reach the mock unchanged and in order. The sender is a
    // thread pacing on the real clock: on a loaded machine one packet can come later than
    // the jitter buffer's 10 ms minimum allows and is concealed (its slot then carries the
    // encoding of the concealment), so one frame may be missing; any decode/encode on the
    // way would change the 0x7F of every frame.
    let complete = |m: &voxline_mock_realtime::MockServer| {
        let got = m.audio_received_bytes();
        let (mut at, mut found) = (0, 0);
        for f in &frames[5..55] {
            if let Some(i) = find(&got[at..], f) {
                at += i + f.len();
                found += 1;
            }
        }
        found
    };
    let arrived = h.wait(Duration::from_secs(5), |m| complete(m) >= 49);
    let got = h.mock.audio_received_bytes();
    assert!(
        arrived,
        "only {} of frames 5..55 reached the mock unchanged and in order ({} bytes received; \
         0x7F count {})",
        complete(&h.mock),
        got.len(),
        got.iter().filter(|&&b| b == 0x7F).count()
    );
    let sessions = h.mock.sessions();
    let format = &sessions[0]["audio"]["input"]["format"]["type"];
    assert_eq!(format, "audio/pcmu", "session: {}", sessions[0]);
    assert_eq!(sip.bye(), 200);
    // The API key never reaches the log (voxline runs at DEBUG here).
    let log = h.vox.output();
    assert!(log.contains("realtime session ready"), "{log}");
    assert!(!log.contains(KEY), "the API key is in the log");
}
