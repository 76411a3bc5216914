//! Hold and resume with real media (RFC 3264 §8.4, RFC 3550 §5.1): a Rust SIP + RTP peer
//! calls the echo agent and streams a tone; voxline's RTP comes back. The peer then holds
//! the call (re-INVITE with `a=sendonly`, answered `a=recvonly`) and keeps sending: no
//! RTP may come from voxline for a second (one packet already on its way is tolerated).
//! The peer resumes (re-INVITE `a=sendrecv`): voxline's RTP resumes, the first packet with
//! the marker bit, the sequence numbers continuing without a gap, and the timestamp
//! advanced by the time that passed (not by the packets sent). What comes back after the
//! resume is the caller's live audio, not what the caller sent during the hold.

use crate::common;
use crate::media_peer;

use std::time::Duration;

use common::VoxlineProcess;
use media_peer::{
    CallSpy, RATE, RtpPeer, SipPeer, answer_rtp_addr, api_call, direction, is_tone, offer,
    pcmu_decode, pcmu_tone_frame,
};

#[test]
fn hold_stops_voxline_rtp_and_resume_restarts_it_with_marker_and_timestamp_continuity() {
    let mut vox = VoxlineProcess::spawn("");
    let spy = CallSpy::start(vox.http_addr());
    let mut rtp = RtpPeer::bind(0);
    let port = rtp.port();
    let (mut sip, answer) = SipPeer::call(
        vox.sip_addr(),
        "echo",
        &offer(port, 0, "PCMU", "sendrecv", 1),
    );
    let to = answer_rtp_addr(&answer);
    let id = spy.id_of(sip.call_id(), Duration::from_secs(2));

    // Talking: 1 kHz out, 1 kHz back.
    let mut k = 0;
    let before = rtp.stream(to, 30, |_| {
        k += 1;
        pcmu_tone_frame(1000.0, 8000.0, k)
    });
    assert!(
        before.len() >= 20,
        "only {} packets from voxline before hold",
        before.len()
    );

    // Hold.
    let held = sip.reinvite(&offer(port, 0, "PCMU", "sendonly", 2));
    assert_eq!(direction(&held), "recvonly", "hold answer:\n{held}");
    // What was already sent before voxline saw the re-INVITE.
    let queued = rtp.drain();
    let last = queued.last().or(before.last()).cloned().expect("a packet");
    let during = rtp.stream(to, 50, |_| {
        k += 1;
        pcmu_tone_frame(600.0, 8000.0, k)
    });
    assert!(
        during.len() <= 1,
        "voxline sent {} RTP packets while on hold (recvonly)",
        during.len()
    );
    let call = api_call(vox.http_addr(), id);
    assert_eq!(call["on_hold"], true, "call: {call:#}");
    let last = during.last().cloned().unwrap_or(last);

    // Resume.
    let resumed = sip.reinvite(&offer(port, 0, "PCMU", "sendrecv", 3));
    assert_eq!(direction(&resumed), "sendrecv", "resume answer:\n{resumed}");
    let after = rtp.stream(to, 40, |_| {
        k += 1;
        pcmu_tone_frame(1400.0, 8000.0, k)
    });
    assert!(
        after.len() >= 25,
        "only {} packets from voxline after resume",
        after.len()
    );
    let first = &after[0];
    assert!(
        first.marker,
        "the first packet after resume has no marker bit"
    );
    assert_eq!(
        first.seq,
        last.seq.wrapping_add(1),
        "sequence numbers must continue across hold"
    );
    assert_eq!(first.ssrc, last.ssrc, "SSRC changed across hold");
    let ts_ms = f64::from(first.ts.wrapping_sub(last.ts)) * 1000.0 / f64::from(RATE);
    let wall_ms = (first.at - last.at).as_secs_f64() * 1000.0;
    assert!(
        (ts_ms - wall_ms).abs() <= 60.0,
        "timestamp advanced {ts_ms:.0} ms across hold, but {wall_ms:.0} ms passed"
    );
    // The echo after the resume is the caller's live audio (1.4 kHz), never what the
    // caller sent while on hold (600 Hz): the agent pauses with the media.
    let label = |p: &media_peer::Rtp| {
        let pcm = pcmu_decode(&p.payload);
        [1400.0, 1000.0, 600.0]
            .into_iter()
            .find(|&hz| is_tone(&pcm, hz, 2000.0))
            .map_or("-".to_string(), |hz| format!("{hz}"))
    };
    let heard: Vec<String> = after.iter().map(label).collect();
    assert!(
        !heard.iter().any(|h| h == "600"),
        "voxline echoed audio from the hold after the resume: {heard:?}"
    );
    let live = heard.iter().filter(|h| *h == "1400").count();
    assert!(
        live >= 25,
        "only {live} packets after the resume echo the live 1.4 kHz tone: {heard:?}"
    );
    let call = api_call(vox.http_addr(), id);
    assert_eq!(call["on_hold"], false, "call: {call:#}");
    assert_eq!(sip.bye(), 200);
    vox.assert_running();
}
