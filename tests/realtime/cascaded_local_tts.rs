//! The local TTS: a cascaded agent whose `[agent.tts]` is espeak-ng greets the caller and
//! answers a turn with no TTS provider on the network (the mocks get no TTS request), its
//! speech resampled from 22 050 Hz to the call's 8 kHz μ-law.

use crate::cascaded_support::{CascadedE2e, agent_frames, question, say_and_listen};
use crate::realtime_e2e_support::converse;

use voxline_mock_cascaded::ProvidersConfig;

#[test]
fn espeak_speaks_the_greeting_and_the_reply() {
    // An espeak [agent.tts] takes only a voice: the test writes the whole table.
    let h = CascadedE2e::start_with_tts(
        ProvidersConfig::default(),
        "[agent.tts]\nprovider = \"espeak\"\nvoice = \"en-us\"\n",
        "greeting = \"Hello, you are talking to the local voice.\"\n",
    );
    let (mut sip, mut rtp, to) = h.call("1000");
    let greeting = converse(&mut rtp, to, 150, |_, _| vec![0xFF; 160]);
    assert!(
        agent_frames(&greeting) >= 50,
        "the greeting did not play: {} frames\n{}",
        agent_frames(&greeting),
        h.vox.output()
    );
    let q = question("What time is it");
    let got = say_and_listen(&mut rtp, to, &q, 10, 10 + q.len() / 160 + 250);
    assert_eq!(sip.bye(), 200);
    let out = h.vox.output();
    assert!(agent_frames(&got) >= 30, "the reply did not play\n{out}");
    assert_eq!(h.mock.chat_requests().len(), 1, "{out}");
    assert!(h.mock.tts_requests().is_empty(), "a network TTS was asked");
    assert!(h.mock.errors().is_empty(), "{:?}", h.mock.errors());
}
