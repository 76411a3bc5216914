//! A wideband call (G.722) with a realtime agent: nothing to pass through, so voxline decodes
//! the caller to 16 kHz PCM, the client resamples it to the 24 kHz `audio/pcm` the Realtime
//! API speaks, and the reply (24 kHz PCM) comes back resampled and G.722-encoded. The mock's
//! VAD hears the caller's tone, its 440 Hz reply arrives at the caller as a 440 Hz tone.

use crate::media_peer;
use crate::realtime_e2e_support;

use std::time::Duration;

use media_peer::{RtpPeer, SipPeer, answer_rtp_addr, is_tone, offer, rms, tone};
use realtime_e2e_support::RealtimeE2e;
use voxline::media::codec::{AudioDecoder, AudioEncoder, G722Decoder, G722Encoder};
use voxline_mock_realtime::MockConfig;

/// Samples of a 20 ms frame at 16 kHz.
const WB_FRAME: usize = 320;

#[test]
fn a_g722_call_talks_to_the_backend_in_24khz_pcm() {
    let h = RealtimeE2e::start(MockConfig::default(), "", "", "");
    let mut rtp = RtpPeer::bind(9);
    let (mut sip, answer) = SipPeer::call(
        h.vox.sip_addr(),
        "1000",
        &offer(rtp.port(), 9, "G722", "sendrecv", 1),
    );
    assert!(answer.contains("G722"), "G.722 not chosen:\n{answer}");
    let to = answer_rtp_addr(&answer);
    let mut enc = G722Encoder::new(20);
    // 600 ms of a 300 Hz tone (16 kHz PCM, G.722), then silence while the reply plays.
    let packets = rtp.stream(to, 130, |k| {
        let pcm = if k < 30 {
            // `tone` counts samples at 8 kHz; ask for 16 kHz-spaced samples by halving hz.
            tone(150.0, 12000.0, k * WB_FRAME, WB_FRAME)
        } else {
            vec![0; WB_FRAME]
        };
        let mut out = Vec::new();
        enc.encode(&pcm, &mut out).expect("encode");
        out
    });
    let session = &h.mock.sessions()[0];
    assert_eq!(
        session["audio"]["input"]["format"]["type"], "audio/pcm",
        "{session}"
    );
    assert_eq!(
        session["audio"]["input"]["format"]["rate"], 24000,
        "{session}"
    );
    assert!(
        h.wait(Duration::from_secs(2), |m| !m.audio_sent_bytes().is_empty()),
        "the mock never heard a turn"
    );
    // Decode what came back and find the reply: loud frames with a 440 Hz tone.
    let mut dec = G722Decoder::new();
    let mut pcm = Vec::new();
    for p in packets.iter().filter(|p| p.pt == 9) {
        let mut frame = Vec::new();
        dec.decode(&p.payload, &mut frame).expect("decode");
        pcm.extend(frame);
    }
    let loud: Vec<&[i16]> = pcm.chunks(WB_FRAME).filter(|f| rms(f) > 1000.0).collect();
    assert!(
        loud.len() >= 40,
        "only {} loud 20 ms frames of the 1 s reply came back",
        loud.len()
    );
    // The helpers count in 8 kHz samples: 220 Hz there is 440 Hz at 16 kHz.
    let mid = loud[loud.len() / 2];
    assert!(
        is_tone(mid, 220.0, 1000.0),
        "the reply is not a 440 Hz tone"
    );
    assert_eq!(sip.bye(), 200);
}
