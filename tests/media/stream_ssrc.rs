//! The peer's stream changes SSRC (a B2BUA switching legs, a transfer): after the RTP
//! receiver's probation the stream reports `SsrcChanged`, restarts the jitter buffer and plays
//! the new source.

use crate::media_stream_support;

use std::time::Instant;

use media_stream_support::*;
use voxline::media::codec::g711::ulaw_encode;
use voxline::media::rtp::Ssrc;
use voxline::media::stream::{MediaEvent, MediaStream};
use voxline::sdp::Codec;

#[test]
fn ssrc_change_restarts_the_stream() {
    let t0 = Instant::now();
    let peer = addr("192.0.2.1:4000");
    let mut s = MediaStream::new(
        config(session(Codec::Pcmu, peer, false, false), 1, 3, t0),
        t0,
    )
    .expect("stream");
    let loud: Vec<u8> = tone(800.0, 8000.0, 8000, 0, 160)
        .into_iter()
        .map(ulaw_encode)
        .collect();
    let mut evs = Vec::new();
    let mut caller_rms = Vec::new();
    for k in 0..100u32 {
        let at = t0 + ms(u64::from(k) * 20);
        // First source for 1 s, then another SSRC with unrelated sequence and timestamps.
        let pkt = if k < 50 {
            rtp(0, 1000 + k as u16, 5000 + k * 160, 0x1111, k == 0, &loud)
        } else {
            rtp(
                0,
                40000 + k as u16,
                900_000 + k * 160,
                0x2222,
                k == 50,
                &loud,
            )
        };
        s.handle_rtp(at + ms(5), peer, &pkt);
        let outs = drive(&mut s, at + ms(10));
        evs.extend(events(&outs));
        caller_rms.extend(frames(&outs).iter().map(|(c, _)| rms(c)));
    }
    assert_eq!(
        evs,
        vec![
            MediaEvent::Latched { addr: peer },
            MediaEvent::SsrcChanged {
                ssrc: Ssrc::new(0x2222)
            }
        ]
    );
    let st = s.stats();
    assert_eq!(st.ssrc_changes, 1);
    assert_eq!(st.remote_ssrc, Some(0x2222));
    // Probation held back one packet of the new source.
    assert_eq!(st.dropped_sequence, 1);
    // The new source is played: the last 30 frames are loud.
    assert!(
        caller_rms[70..].iter().all(|r| *r > 3000.0),
        "{caller_rms:?}"
    );
}
