//! The `play` agent end to end: a number routed to a play agent with a 1 kHz tone of
//! 1000 ms. A Rust SIP + RTP peer calls it (sending silence, as a phone would): the RTP it
//! receives must hold about one second of a 1 kHz tone, after which voxline hangs up with
//! a BYE.

use crate::common;
use crate::media_peer;

use std::time::Duration;

use common::VoxlineProcess;
use media_peer::{
    RtpPeer, SipPeer, answer_rtp_addr, is_tone, offer, pcmu_decode, pcmu_encode, rms,
};

const CONFIG: &str = r#"
[[route]]
number = "tone"
agent = "tone"

[[agent]]
name = "tone"
kind = "play"
tone_hz = 1000
tone_ms = 1000
"#;

#[test]
fn a_one_second_tone_then_bye() {
    let mut vox = VoxlineProcess::spawn(CONFIG);
    let mut rtp = RtpPeer::bind(0);
    let (mut sip, answer) = SipPeer::call(
        vox.sip_addr(),
        "tone",
        &offer(rtp.port(), 0, "PCMU", "sendrecv", 1),
    );
    let to = answer_rtp_addr(&answer);
    let silence = pcmu_encode(&[0i16; 160]);
    // 1.6 s of silence from us; voxline's tone meanwhile.
    let got = rtp.stream(to, 80, |_| silence.clone());
    let bye = sip.wait_request("BYE", Duration::from_secs(3));
    assert!(bye.is_some(), "no BYE from voxline after the tone");

    let tone: Vec<usize> = got
        .iter()
        .enumerate()
        .filter(|(_, p)| is_tone(&pcmu_decode(&p.payload), 1000.0, 2000.0))
        .map(|(i, _)| i)
        .collect();
    // 1000 ms = 50 packets of 20 ms; the first and last may be partly silent.
    assert!(
        (48..=51).contains(&tone.len()),
        "{} packets of 1 kHz tone, expected about 50",
        tone.len()
    );
    let (first, last) = (tone[0], tone[tone.len() - 1]);
    assert_eq!(
        last - first + 1,
        tone.len(),
        "the tone has gaps: packets {tone:?}"
    );
    // Nothing but silence after the tone.
    for p in got.iter().skip(last + 2) {
        let level = rms(&pcmu_decode(&p.payload));
        assert!(level < 100.0, "sound (RMS {level:.0}) after the tone");
    }
    // Other frequencies are not it: the tone is 1 kHz, not 900 Hz or 1.1 kHz.
    let middle = pcmu_decode(&got[first + 10].payload);
    for hz in [900.0, 1100.0] {
        assert!(
            !is_tone(&middle, hz, 2000.0),
            "the tone also passes as {hz} Hz"
        );
    }
    vox.assert_running();
}
