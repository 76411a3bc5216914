//! The backend is unreachable before the answer: by default the call is refused with 503
//! (the caller heard ringing while voxline tried), and with a fallback prompt configured the
//! call is answered, the prompt plays as RTP, and voxline hangs up after it.

use crate::common;
use crate::realtime_e2e_support;

use std::time::Duration;

use common::{VoxlineProcess, status_code};
use realtime_e2e_support::{KEY, KEY_ENV, config, is_agent_audio, raw_invite, talk};

/// A WebSocket URL where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("ws://{addr}/v1/realtime")
}

#[test]
fn unreachable_backend_rejects_the_call_with_503() {
    let vox = VoxlineProcess::spawn_with_env(&config(&dead_url(), "", "", ""), &[(KEY_ENV, KEY)]);
    let (_udp, resp) = raw_invite(vox.sip_addr(), "1000", 40000, Duration::from_secs(10));
    let resp = resp.expect("a final response");
    assert_eq!(status_code(&resp), Some(503), "{resp}");
    assert!(
        vox.output().contains("AI backend unreachable"),
        "the log does not say why:\n{}",
        vox.output()
    );
}

#[test]
fn unreachable_backend_with_a_prompt_answers_plays_it_and_hangs_up() {
    let toml = config(
        &dead_url(),
        "",
        "",
        "[agent.fallback]\ntone_hz = 600.0\ntone_ms = 1000\n",
    );
    let vox = VoxlineProcess::spawn_with_env(&toml, &[(KEY_ENV, KEY)]);
    let (mut sip, mut rtp, to) = realtime_e2e_support::call(vox.sip_addr(), "1000");
    let packets = talk(&mut rtp, to, 0, 100);
    let prompt = packets.iter().filter(|p| is_agent_audio(p)).count();
    assert!(
        (45..=52).contains(&prompt),
        "{prompt} packets of the 1 s prompt arrived"
    );
    assert!(
        sip.wait_request("BYE", Duration::from_secs(3)).is_some(),
        "no BYE after the prompt"
    );
}

#[test]
fn a_rate_limited_backend_rejects_with_503_and_retry_after() {
    let h = realtime_e2e_support::RealtimeE2e::start(
        voxline_mock_realtime::MockConfig {
            reject_status: Some(429),
            ..Default::default()
        },
        "",
        "",
        "",
    );
    let (_udp, resp) = raw_invite(h.vox.sip_addr(), "1000", 40004, Duration::from_secs(10));
    let resp = resp.expect("a final response");
    assert_eq!(status_code(&resp), Some(503), "{resp}");
    // The mock's 429 says Retry-After: 7; the caller's side is told the same.
    assert_eq!(
        common::header(&resp, "Retry-After", None).map(str::trim),
        Some("7"),
        "{resp}"
    );
}

#[test]
fn a_backend_lost_mid_call_plays_the_fallback_prompt_then_hangs_up() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mock = rt
        .block_on(voxline_mock_realtime::MockServer::start(
            voxline_mock_realtime::MockConfig {
                api_key: KEY.to_owned(),
                ..Default::default()
            },
        ))
        .expect("mock");
    // No reconnection: a drop is final, and the fallback prompt takes over.
    let toml = config(
        &mock.url(),
        "",
        "",
        "[agent.fallback]\ntone_hz = 600.0\ntone_ms = 600\n",
    )
    .replace(
        "noise_reduction = \"none\"",
        "noise_reduction = \"none\"\nreconnect = false",
    );
    let vox = VoxlineProcess::spawn_with_env(&toml, &[(KEY_ENV, KEY)]);
    let (mut sip, mut rtp, to) = realtime_e2e_support::call(vox.sip_addr(), "1000");
    let before = talk(&mut rtp, to, 0, 25);
    assert!(
        !before.iter().any(is_agent_audio),
        "agent audio before anyone spoke"
    );
    mock.drop_connections();
    let after = talk(&mut rtp, to, 0, 60);
    let prompt = after.iter().filter(|p| is_agent_audio(p)).count();
    assert!(
        (25..=32).contains(&prompt),
        "{prompt} packets of the 600 ms prompt arrived:\n{}",
        vox.output()
    );
    assert!(
        sip.wait_request("BYE", Duration::from_secs(3)).is_some(),
        "no BYE after the prompt"
    );
    assert_eq!(
        rt.block_on(async { mock.connections() }),
        1,
        "it reconnected"
    );
}
