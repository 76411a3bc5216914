//! Echo end to end, against a real `voxline run` answering with its default route (the
//! built-in `echo` agent).
//!
//! * SIPp (sipp-scenarios/uac_pcap_echo.xml) plays sip-tester's recorded G.711 A-law call
//!   (g711a.pcap, 7 s) into a call: voxline's API must then show the call in PCMA, packets
//!   received and sent, the echoed audio counted as agent audio, and the media latched on
//!   SIPp's media address.
//! * A Rust SIP + RTP peer streams a 1 kHz PCMU tone for 2 s at 20 ms pacing: what voxline
//!   sends back to the peer's RTP socket must decode to that tone.

use crate::common;
use crate::media_peer;

use std::path::Path;
use std::time::Duration;

use common::{VoxlineProcess, scenario, sipp};
use media_peer::{
    CallSpy, RtpPeer, SipPeer, answer_rtp_addr, is_tone, offer, pcmu_decode, pcmu_tone_frame,
    wait_ended,
};

/// The recorded call shipped with SIPp.
const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";

#[test]
fn sipp_pcap_audio_is_echoed_in_pcma_from_the_latched_address() {
    assert!(
        Path::new(G711A_PCAP).is_file(),
        "{G711A_PCAP} not found: install it with `apt-get install sip-tester`"
    );
    let mut vox = VoxlineProcess::spawn("");
    let spy = CallSpy::start(vox.http_addr());
    let run = sipp(
        &[
            "-sf",
            &scenario("uac_pcap_echo.xml"),
            "-s",
            "echo",
            "-m",
            "1",
            &vox.sip_addr().to_string(),
        ],
        Duration::from_secs(20),
    );
    run.assert_success("pcap echo call");
    let id = spy.the_call(Duration::from_secs(1));
    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(5));
    let media = &call["media"];
    let report = || format!("call: {call:#}\n{}", run.report());

    assert_eq!(call["codec"], "PCMA", "{}", report());
    assert_eq!(media["codec"], "PCMA", "{}", report());
    // The recording holds 236 packets of 30 ms; SIPp plays all of them before its BYE.
    let received = media["packets_received"].as_u64().unwrap_or(0);
    assert!(received >= 200, "packets_received {received}\n{}", report());
    let sent = media["packets_sent"].as_u64().unwrap_or(0);
    assert!(sent >= 200, "packets_sent {sent}\n{}", report());
    // What went back was the caller's audio (agent audio), not just silence: about the 7 s
    // SIPp played.
    let agent_ms = media["agent_ms_sent"].as_u64().unwrap_or(0);
    assert!(agent_ms >= 6000, "agent_ms_sent {agent_ms}\n{}", report());
    // The offer said a=ptime:30, like the recording: every packet plays, none is late.
    assert_eq!(media["packets_lost"], 0, "{}", report());
    assert_eq!(media["dropped_late"], 0, "{}", report());

    // SIPp plays the pcap from its media port, the one its SDP offered.
    let sipp_port = run
        .messages
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no m=audio in SIPp's INVITE\n{}", report()))
        .to_string();
    assert_eq!(
        media["latched"],
        format!("127.0.0.1:{sipp_port}"),
        "{}",
        report()
    );
    vox.assert_running();
}

#[test]
fn a_pcmu_tone_comes_back_on_the_wire() {
    let mut vox = VoxlineProcess::spawn("");
    let mut rtp = RtpPeer::bind(0);
    let (mut sip, answer) = SipPeer::call(
        vox.sip_addr(),
        "echo",
        &offer(rtp.port(), 0, "PCMU", "sendrecv", 1),
    );
    let to = answer_rtp_addr(&answer);
    // 2 s of a 1 kHz tone at -12 dBFS, 20 ms a packet.
    let got = rtp.stream(to, 100, |k| pcmu_tone_frame(1000.0, 8000.0, k));
    assert_eq!(sip.bye(), 200, "BYE not answered with 200");

    assert!(
        got.len() >= 80,
        "only {} RTP packets came back in 2 s",
        got.len()
    );
    assert!(
        got.iter().all(|p| p.pt == 0),
        "voxline answered PCMU but sent other payload types: {:?}",
        got.iter().map(|p| p.pt).collect::<Vec<_>>()
    );
    let ssrcs: std::collections::BTreeSet<u32> = got.iter().map(|p| p.ssrc).collect();
    assert_eq!(ssrcs.len(), 1, "voxline's SSRC changed: {ssrcs:?}");
    let tone_frames = got
        .iter()
        .filter(|p| is_tone(&pcmu_decode(&p.payload), 1000.0, 2000.0))
        .count();
    // The jitter buffer holds the first ~40 ms back; everything after is the echo.
    assert!(
        tone_frames >= 80,
        "only {tone_frames} of {} packets from voxline hold the 1 kHz tone",
        got.len()
    );
    // And it is the echo, not a tone of voxline's own: a 1.5 kHz tone would not pass.
    let any_1500 = got
        .iter()
        .any(|p| is_tone(&pcmu_decode(&p.payload), 1500.0, 2000.0));
    assert!(!any_1500, "a 1.5 kHz tone came back from a 1 kHz input");
    vox.assert_running();
}
