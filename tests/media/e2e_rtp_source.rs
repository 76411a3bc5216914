//! Where voxline takes RTP from, with a real process and sockets (docs/media.md, latching):
//! once the latching window (5 s) has closed, a second sender on another port, even with the
//! caller's SSRC, is never played and never answered (voxline connects its RTP socket to the
//! peer then, so the kernel drops such packets). A re-INVITE moving the caller's media to that
//! second port makes it the peer: its audio is echoed back to it (the socket is freed for
//! latching again, and connected to the new peer once the new window closes).

use crate::common;
use crate::media_peer;

use std::time::{Duration, Instant};

use common::VoxlineProcess;
use media_peer::{RtpPeer, SipPeer, answer_rtp_addr, is_tone, offer, pcmu_decode, pcmu_tone_frame};

/// The latching window after the call starts or a re-INVITE (`call::media`).
const LATCH_WINDOW: Duration = Duration::from_secs(5);

/// The tones (Hz) among `hz` heard in each packet, "-" for none.
fn heard(packets: &[media_peer::Rtp], hz: &[f64]) -> Vec<String> {
    packets
        .iter()
        .map(|p| {
            let pcm = pcmu_decode(&p.payload);
            hz.iter()
                .find(|&&f| is_tone(&pcm, f, 2000.0))
                .map_or("-".to_string(), |f| format!("{f}"))
        })
        .collect()
}

#[test]
fn after_the_latching_window_only_the_peer_is_played_until_a_reinvite_moves_it() {
    let mut vox = VoxlineProcess::spawn("");
    let mut a = RtpPeer::bind(0);
    let (mut sip, answer) = SipPeer::call(
        vox.sip_addr(),
        "echo",
        &offer(a.port(), 0, "PCMU", "sendrecv", 1),
    );
    let started = Instant::now();
    let to = answer_rtp_addr(&answer);

    // The caller talks (1 kHz) until the latching window has surely closed.
    let mut k = 0;
    let frames = (LATCH_WINDOW + Duration::from_secs(1)).as_millis() as usize / 20;
    let got = a.stream(to, frames, |_| {
        k += 1;
        pcmu_tone_frame(1000.0, 8000.0, k)
    });
    assert!(started.elapsed() > LATCH_WINDOW);
    let tones = heard(&got, &[1000.0]);
    assert!(
        tones.iter().filter(|t| *t == "1000").count() >= frames / 2,
        "the caller's tone is not echoed: {tones:?}"
    );

    // Another port sends 600 Hz with the caller's SSRC and sequence: not played, and not
    // answered; the caller meanwhile hears no 600 Hz.
    let mut b = RtpPeer::bind(0);
    b.new_source(a.ssrc, a.seq, a.ts);
    let mut j = 0;
    let to_b = b.stream(to, 40, |_| {
        j += 1;
        pcmu_tone_frame(600.0, 8000.0, j)
    });
    assert!(
        to_b.is_empty(),
        "voxline sent {} packets to the foreign sender",
        to_b.len()
    );
    let at_a = heard(&a.drain(), &[600.0, 1000.0]);
    assert!(
        !at_a.iter().any(|t| t == "600"),
        "the foreign sender's audio was played: {at_a:?}"
    );

    // The caller moves its media to that port (as after a transfer or an address change).
    let moved = sip.reinvite(&offer(b.port(), 0, "PCMU", "sendrecv", 2));
    assert_eq!(answer_rtp_addr(&moved), to, "same voxline port");
    let mut j = 0;
    let got = b.stream(to, 50, |_| {
        j += 1;
        pcmu_tone_frame(700.0, 8000.0, j)
    });
    let tones = heard(&got, &[700.0, 600.0, 1000.0]);
    assert!(
        tones.iter().filter(|t| *t == "700").count() >= 25,
        "the new address's audio is not echoed to it: {tones:?}"
    );
    assert_eq!(sip.bye(), 200);
    vox.assert_running();
}
