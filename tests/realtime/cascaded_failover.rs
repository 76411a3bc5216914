//! Fallback between backends in the middle of a call: an agent answers with its realtime
//! backend, which then fails for good (the connection drops and every reconnection is
//! refused). Without dropping the call, voxline switches to the agent's cascaded backend,
//! which goes on with the conversation so far: its first LLM request holds the first turn
//! (the caller's transcribed words and the realtime agent's reply) before the caller's next
//! words. Meanwhile the caller hears the switch prompt, spoken locally. The switch is in the
//! transcript, the call record and the metrics.

use crate::cascaded_support::{ChainE2e, agent_frames, question, say_and_listen};
use crate::common::http_get;
use crate::realtime_e2e_support::{call, talk};

use std::time::Duration;

use voxline::records::read_transcript;
use voxline_mock_cascaded::{ProvidersConfig, SttMockConfig};
use voxline_mock_realtime::MockConfig;

#[test]
fn a_failing_realtime_backend_hands_the_call_to_the_cascaded_one() {
    let h = ChainE2e::start(
        MockConfig {
            reply_text: "Hello, this is the realtime agent".into(),
            ..MockConfig::default()
        },
        ProvidersConfig {
            stt: SttMockConfig {
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
    let (mut sip, mut rtp, to) = call(vox.sip_addr(), "1000");
    // Turn 1 with the realtime backend.
    let first = talk(&mut rtp, to, 30, 100);
    assert!(
        agent_frames(&first) > 0,
        "the realtime agent did not answer\n{}",
        vox.output()
    );
    assert!(
        rt.block_on(realtime.wait_until(Duration::from_secs(3), |m| {
            m.received_of_type("response.create").len() + m.speech_starts() as usize > 0
        })),
        "{}",
        vox.output()
    );
    // The realtime backend fails for good.
    realtime.set_accepting(false);
    realtime.drop_connections();
    // The phone keeps sending (silence) while voxline switches, and hears the switch prompt
    // ("One moment, please.", espeak-ng on voxline's machine).
    let during = crate::realtime_e2e_support::converse(&mut rtp, to, 150, |_, _| vec![0xFF; 160]);
    assert!(
        agent_frames(&during) >= 20,
        "no switch prompt: {} frames\n{}",
        agent_frames(&during),
        vox.output()
    );
    assert!(
        rt.block_on(providers.wait_until(Duration::from_secs(5), |p| p.stt_connections() == 1)),
        "no switch to the cascaded backend\n{}",
        vox.output()
    );
    // Turn 2 with the cascaded backend, in the same call.
    let q = question("Are you still there");
    let second = say_and_listen(&mut rtp, to, &q, 10, 10 + q.len() / 160 + 250);
    assert_eq!(sip.bye(), 200);
    let out = vox.output();
    assert!(
        providers.errors().is_empty(),
        "{:?}\n{out}",
        providers.errors()
    );
    assert!(
        agent_frames(&second) > 30,
        "the cascaded reply did not play: STT got {} bytes, sent {:?}\n{out}",
        providers.stt_audio_bytes(),
        providers.stt_sent()
    );
    let chats = providers.chat_requests();
    assert_eq!(chats.len(), 1, "{out}");
    let msgs = chats[0].body["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"], "{msgs:?}");
    assert!(
        msgs[1]["content"]
            .as_str()
            .unwrap()
            .starts_with("caller said"),
        "{msgs:?}"
    );
    assert_eq!(msgs[2]["content"], "Hello, this is the realtime agent");
    assert_eq!(msgs[3]["content"], "are you still there");

    let record = crate::cascaded_support::finished_record(vox.work_dir());
    let r = record.unwrap_or_else(|| panic!("no record\n{out}"));
    assert_eq!(r.backend_switches.len(), 1, "{:?}", r.backend_switches);
    assert_eq!(
        (
            r.backend_switches[0].from.as_str(),
            r.backend_switches[0].to.as_str()
        ),
        ("realtime", "cascaded")
    );
    let t = read_transcript(vox.work_dir().join(r.transcript_path.unwrap())).unwrap();
    assert!(
        t.entries.iter().any(|e| e
            .text
            .starts_with("backend switched from realtime to cascaded")),
        "{:?}",
        t.entries.iter().map(|e| &e.text).collect::<Vec<_>>()
    );
    let (_, metrics) = http_get(vox.http_addr(), "/metrics", Duration::from_secs(5)).unwrap();
    assert!(
        metrics.contains("voxline_backend_switches_total 1\n"),
        "{metrics}"
    );
}
