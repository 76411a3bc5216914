//! Far ends that packetise differently from us, end to end: the test writes a PCMU capture
//! of 10 ms (or 30 ms) packets, SIPp plays it into a call to a real `voxline run` answering
//! with its default echo agent, offering no `a=ptime` (so voxline plays 20 ms frames). The
//! call's recording then holds on its agent channel, sample for sample, the audio SIPp sent:
//! the echo is the caller's audio, with nothing dropped as late or concealed, and the call
//! reports an honest quality (MOS of a clean G.711 call).

use crate::common;
use crate::media_peer;

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::{VoxlineProcess, sipp};
use media_peer::{CallSpy, wait_ended};
use voxline::dsp::wav::parse_pcm16;
use voxline::media::codec::g711::{ulaw_decode, ulaw_encode};

/// Seconds of audio in the capture.
const SECONDS: usize = 4;

/// A deterministic, speech-like signal at 8 kHz: three partials gliding in pitch, with a
/// syllable-rate envelope, so that no two 20 ms windows are alike.
fn signal(n: usize) -> Vec<i16> {
    (0..n)
        .map(|i| {
            let t = i as f64 / 8000.0;
            let f0 = 140.0 + 40.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            let phase = 2.0 * std::f64::consts::PI * f0 * t;
            let env = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 3.1 * t).sin();
            let v = phase.sin() + 0.5 * (2.0 * phase).sin() + 0.3 * (3.3 * phase).sin();
            (v * env * 6000.0) as i16
        })
        .collect()
}

/// A pcap (Ethernet, IPv4, UDP) of RTP packets of `ptime_ms` carrying `ulaw`, timestamped
/// at their sending times.
fn pcap(ulaw: &[u8], ptime_ms: usize) -> Vec<u8> {
    let per = 8 * ptime_ms;
    let mut out = Vec::new();
    // Global header: magic, v2.4, GMT offset, accuracy, snaplen, link type 1 (Ethernet).
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (k, chunk) in ulaw.chunks(per).enumerate() {
        let mut rtp = vec![0x80, if k == 0 { 0x80 } else { 0x00 }];
        rtp.extend_from_slice(&(1000u16.wrapping_add(k as u16)).to_be_bytes());
        rtp.extend_from_slice(&(5000u32 + (k * per) as u32).to_be_bytes());
        rtp.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        rtp.extend_from_slice(chunk);
        let udp_len = 8 + rtp.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        frame.extend_from_slice(&[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 6, 0x08, 0x00]);
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
        ip.extend_from_slice(&[0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
        let sum = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&40000u16.to_be_bytes());
        frame.extend_from_slice(&40002u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&rtp);
        let micros = k * ptime_ms * 1000;
        out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

/// Plays `ptime_ms` packets into an echo call and checks the echo and the figures.
fn echo_of_packets(ptime_ms: usize) {
    let dir = tempfile::Builder::new()
        .prefix("voxline-pcap-")
        .tempdir()
        .expect("tempdir");
    let source = signal(8000 * SECONDS);
    let ulaw: Vec<u8> = source.iter().map(|&s| ulaw_encode(s)).collect();
    // What the far end hears of itself in a perfect echo: the decoding of what it sent.
    let heard: Vec<i16> = ulaw.iter().map(|&b| ulaw_decode(b)).collect();
    let pcap_path = dir.path().join(format!("pcmu_{ptime_ms}ms.pcap"));
    fs::write(&pcap_path, pcap(&ulaw, ptime_ms)).expect("write pcap");
    let template = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp-scenarios")
        .join("uac_pcap_packetisation.template.xml");
    let xml = fs::read_to_string(&template)
        .expect("scenario template")
        .replace("@PCAP@", &pcap_path.display().to_string())
        .replace("@PAUSE_MS@", &(SECONDS * 1000 + 600).to_string());
    let scenario = dir.path().join("scenario.xml");
    fs::write(&scenario, xml).expect("write scenario");

    let data_dir = dir.path().join("data");
    let mut vox = VoxlineProcess::spawn(&format!("data_dir = \"{}\"\n", data_dir.display()));
    let spy = CallSpy::start(vox.http_addr());
    let run = sipp(
        &[
            "-sf",
            &scenario.display().to_string(),
            "-s",
            "echo",
            "-m",
            "1",
            &vox.sip_addr().to_string(),
        ],
        Duration::from_secs(20),
    );
    run.assert_success("pcap call");
    let id = spy.the_call(Duration::from_secs(1));
    let call = wait_ended(vox.http_addr(), id, Duration::from_secs(5));
    let media = &call["media"];
    let report = || format!("call: {call:#}\n{}", run.report());

    assert_eq!(media["codec"], "PCMU", "{}", report());
    assert_eq!(media["frame_ms"], 20.0, "{}", report());
    let expected_packets = (8000 * SECONDS).div_ceil(8 * ptime_ms) as u64;
    assert_eq!(
        media["packets_received"].as_u64(),
        Some(expected_packets),
        "{}",
        report()
    );
    assert_eq!(media["dropped_late"], 0, "{}", report());
    assert_eq!(media["packets_lost"], 0, "{}", report());
    let mos = media["mos"].as_f64().unwrap_or(0.0);
    assert!(
        mos >= 4.3,
        "MOS {mos} on a clean loopback call\n{}",
        report()
    );

    // The recording: the agent channel is what voxline sent back.
    let path = call["recording"]
        .as_str()
        .unwrap_or_else(|| panic!("no recording\n{}", report()))
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let rec = loop {
        if let Ok(bytes) = fs::read(&path)
            && let Ok(w) = parse_pcm16(&bytes)
            && !w.truncated
        {
            break w;
        }
        assert!(Instant::now() < deadline, "recording not finished");
        thread::sleep(Duration::from_millis(50));
    };
    let (caller, echo) = (rec.channel(0), rec.channel(1));
    for (name, channel) in [("caller", &caller), ("agent (echo)", &echo)] {
        // Where the far end's audio starts in this channel: found by a 100 ms probe from
        // 100 ms in; on a loaded machine a jitter-buffer correction or a concealed late
        // packet can fall inside that probe, so later probes (every 200 ms) are tried too,
        // each giving the start as of its place. The start is where the audio's first
        // sample would be: before the channel's first when the buffer dropped a frame of the
        // first 100 ms while it learnt the stream (seen: the third frame), hence signed.
        let probes: Vec<usize> = (800..heard.len().saturating_sub(800))
            .step_by(1600)
            .collect();
        let start = probes
            .iter()
            .find_map(|&from| {
                let probe = &heard[from..from + 800];
                channel
                    .windows(probe.len())
                    .position(|w| w == probe)
                    .map(|p| p as isize - from as isize)
            })
            .unwrap_or_else(|| {
                panic!(
                    "{name} channel: the caller's audio is not there\n{}",
                    report()
                )
            });
        // Every 20 ms window of what was sent is in the channel, exactly and in order. The
        // first 100 ms are left out (the buffer may correct its delay once while it learns
        // the stream), and a jitter-buffer correction later (one frame compressed or
        // stretched on a loaded machine) only moves the windows after it: they are looked
        // for in order, not at one fixed offset. At most two may be missing (plus what the
        // call reports as concealed); with the packetisation bug (a frame per packet) nearly
        // all were.
        let windows = heard.len() / 160;
        let first = usize::try_from(start + 5 * 160).unwrap_or(0);
        let (mut at, mut missing) = (first, Vec::new());
        for w in 5..windows {
            let want = &heard[w * 160..w * 160 + 160];
            let ahead = channel.get(at..).unwrap_or_default();
            match ahead.windows(160).take(640).position(|c| c == want) {
                Some(i) => at += i + 160,
                None => missing.push(w),
            }
        }
        // A frame concealed on a loaded machine (a packet that came after its playout
        // time) replaces the caller's audio: up to two windows per concealed frame more.
        let concealed =
            (media["concealment_ratio"].as_f64().unwrap_or(0.0) * windows as f64).ceil() as usize;
        assert!(
            missing.len() <= 2 + 2 * concealed,
            "{name} channel, {ptime_ms} ms packets: windows {missing:?} of {windows} are not \
             the caller's audio\n{}",
            report()
        );
    }
    vox.assert_running();
}

#[test]
fn packets_of_10ms_are_echoed_exactly() {
    echo_of_packets(10);
}

#[test]
fn packets_of_30ms_are_echoed_exactly() {
    echo_of_packets(30);
}
