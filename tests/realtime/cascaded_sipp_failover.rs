//! Fallback between backends mid-call with SIPp as the caller. SIPp calls with PCMA and plays
//! sip-tester's recorded speech twice (sipp-scenarios/uac_pcap_twice.xml). The agent answers
//! with its realtime backend; during the pause between the two recordings the realtime
//! backend fails for good (its connection drops and reconnecting is refused). The call goes
//! on: voxline switches to the cascaded backend, which hears the second recording in A-law and
//! answers it with the conversation so far. SIPp's call completes normally, and the switch is
//! in the record.

use crate::cascaded_support::{ChainE2e, finished_record};
use crate::common::{Sipp, scenario};

use std::time::{Duration, Instant};

use voxline_mock_cascaded::{ProvidersConfig, SttMockConfig};
use voxline_mock_realtime::MockConfig;

#[test]
fn sipp_keeps_its_call_while_the_realtime_backend_fails_over_to_cascaded() {
    let h = ChainE2e::start(
        MockConfig {
            // The recorded speech of g711a.pcap is quiet.
            vad_rms_threshold: 150.0,
            reply_text: "Hello, this is the realtime agent".into(),
            ..MockConfig::default()
        },
        ProvidersConfig {
            stt: SttMockConfig {
                rms_threshold: 150.0,
                utterances: vec!["are you still there".into()],
                ..SttMockConfig::default()
            },
            ..ProvidersConfig::default()
        },
        "realtime",
        "vad_silence_ms = 300\ntranscription_model = \"whisper-1\"\n",
        "backends = [\"cascaded\"]\n",
    );
    let (rt, realtime, providers, vox) = (&h.rt, &h.realtime, &h.providers, &h.vox);
    let target = vox.sip_addr().to_string();
    let sipp = Sipp::spawn(
        &[
            "-sf",
            &scenario("uac_pcap_twice.xml"),
            "-s",
            "1000",
            "-m",
            "1",
            &target,
        ],
        Duration::from_secs(45),
    );
    // The realtime backend answers the first recording...
    assert!(
        rt.block_on(realtime.wait_until(Duration::from_secs(10), |m| {
            !m.received_of_type("response.create").is_empty() || m.speech_starts() > 0
        })),
        "the realtime backend heard nothing\n{}",
        vox.output()
    );
    // ...and fails for good between the two (the first ends 7 s after the answer, the second
    // starts at 12 s; the realtime backend answered after the first words, within 3 s).
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(8).saturating_sub(started.elapsed()));
    realtime.set_accepting(false);
    realtime.drop_connections();
    let run = sipp.wait();
    let out = vox.output();
    run.assert_success("the call lasts through the switch and ends with SIPp's BYE");
    assert!(
        providers.errors().is_empty(),
        "{:?}\n{out}",
        providers.errors()
    );
    assert_eq!(providers.stt_connections(), 1, "{out}");
    assert!(
        providers.stt_queries()[0].contains("encoding=alaw"),
        "{:?}",
        providers.stt_queries()
    );
    let chats = providers.chat_requests();
    assert!(!chats.is_empty(), "the cascaded backend got no turn\n{out}");
    let msgs = chats[0].body["messages"].as_array().unwrap();
    // The conversation so far came along: the realtime agent's reply is in the history.
    assert!(
        msgs.iter().any(
            |m| m["role"] == "assistant" && m["content"] == "Hello, this is the realtime agent"
        ),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m["role"] == "user" && m["content"] == "are you still there"),
        "{msgs:?}"
    );
    let r = finished_record(vox.work_dir()).unwrap_or_else(|| panic!("no record\n{out}"));
    assert_eq!(r.backend_switches.len(), 1, "{:?}", r.backend_switches);
    assert_eq!(r.backend_switches[0].to, "cascaded");
    assert_eq!(r.end_reason.as_deref(), Some("RemoteBye"), "{r:?}");
}
