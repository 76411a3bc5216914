//! The STT connection drops in the middle of the caller's utterance: voxline reconnects,
//! sends the audio Deepgram had not finalized again, and the turn completes as one utterance
//! with its reply; nothing the caller said is lost.

use crate::cascaded_support::{CascadedE2e, agent_frames, question};
use crate::media_peer::{FRAME, pcmu_encode};
use crate::realtime_e2e_support::{converse, frame_of};

use voxline_mock_cascaded::{ProvidersConfig, SttMockConfig};

#[test]
fn the_stt_reconnects_mid_utterance_without_losing_audio() {
    let cfg = ProvidersConfig {
        stt: SttMockConfig {
            utterances: vec!["I would like to change my delivery address".into()],
            ..SttMockConfig::default()
        },
        ..ProvidersConfig::default()
    };
    let h = CascadedE2e::start(cfg, "deepgram", "", "");
    let (mut sip, mut rtp, to) = h.call("1000");
    let q = question("I would like to change the delivery address of my order");
    let speech_frames = q.len() / FRAME;
    let got = converse(&mut rtp, to, 25 + speech_frames + 300, |k, _| {
        if k == 25 + speech_frames / 2 {
            h.mock.drop_stt();
        }
        let mut f = frame_of(&q, k, 25);
        f.resize(FRAME, 0);
        pcmu_encode(&f)
    });
    assert_eq!(sip.bye(), 200);
    let out = h.vox.output();
    assert_eq!(h.mock.stt_connections(), 2, "{out}");
    assert!(h.mock.errors().is_empty(), "{:?}", h.mock.errors());
    let chats = h.mock.chat_requests();
    assert_eq!(chats.len(), 1, "one utterance, one reply\n{out}");
    let msgs = chats[0].body["messages"].as_array().unwrap();
    assert_eq!(
        msgs.last().unwrap()["content"],
        "I would like to change my delivery address"
    );
    // The unfinalized audio went up twice: more bytes arrived than the call carried until
    // the turn ended.
    assert!(agent_frames(&got) > 50, "the reply did not play\n{out}");
    assert!(out.contains("STT stream re-established"), "{out}");
}
