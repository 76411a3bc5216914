//! The browser phone in Firefox: headless Firefox (Debian's `firefox-esr`, driven by
//! puppeteer-core over WebDriver BiDi, `tests/browser/phone.mjs`) opens voxline's
//! `/phone?agent=echo&autocall=1` with Firefox's fake microphone (a tone). The page dials over
//! SIP over WebSocket (`/sip`), Firefox's WebRTC stack does ICE and DTLS-SRTP with voxline,
//! and the caller's audio reaches the agent (the recording) while the echo comes back to the
//! page (its receiver's `audioLevel`).
//!
//! Firefox gathers no loopback ICE candidates (its `media.peerconnection.ice.loopback` lets
//! it pair with a remote 127.0.0.1, not gather one), so it runs in a network namespace made
//! for the test, with voxline on this side of a veth pair ([`common::TestNetns`]; root).
//!
//! Needs `firefox-esr` and `npm ci` in tests/browser (`.ci/run` does both).

use crate::common;

use common::{TestNetns, VoxlineProcess};

use super::phone_chromium::{assert_caller_heard, finished_record};

/// Seconds the page stays in the call.
const TALK_SECONDS: u32 = 4;

#[test]
fn firefox_calls_the_echo_agent_from_the_phone_page() {
    let ns = TestNetns::new("fx");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The page is reached at the veth address; the ICE candidate must be there too.
    let mut vox = VoxlineProcess::spawn_at(
        ns.host_ip,
        &format!(
            "data_dir = \"{}\"\n[sip]\nexternal_ip = \"{}\"\n",
            data.display(),
            ns.host_ip
        ),
    );
    let url = format!("http://{}/phone?agent=echo&autocall=1", vox.http_addr());
    let page = common::phone_page_firefox(&ns, &url, TALK_SECONDS);
    let report = || format!("{}\nvoxline:\n{}", page.log, vox.output());
    let result = &page.result;
    assert!(
        result["userAgent"]
            .as_str()
            .is_some_and(|ua| ua.contains("Firefox/")),
        "{}",
        report()
    );
    assert_eq!(result["state"], "connected", "{}", report());
    let level = result["maxRemoteLevel"].as_f64().unwrap_or(0.0);
    assert!(level > 0.02, "the page heard {level:.4}\n{}", report());

    let call_id = result["callId"].as_str().expect("callId").to_owned();
    let call = finished_record(&vox, &call_id, &report);
    assert_eq!(call["codec"], "opus", "{call}");
    // Firefox's fake microphone is a tone about 20 dB below full scale.
    assert_caller_heard(&call, 1000, &report);
    vox.assert_running();
}
