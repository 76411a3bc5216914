//! A late wake-up of the media worker never plays silence while the agent's audio waits: the
//! bridge tops the stream's queue up by what the overdue ticks will play before they run,
//! so a reply whose audio is all in voxline comes out whole after a 100 ms stall (it had a
//! 20 ms hole of silence, on the wire and on the agent channel of the recording).

use crate::media_stream_support;

use std::time::Instant;

use media_stream_support::*;
use tokio::sync::mpsc;
use voxline::agent::backend::{AudioChunk, AudioFormat, BackendEvent};
use voxline::call::bridge::{Bridge, Voice};
use voxline::media::rtp::RtpPacket;
use voxline::media::stream::{MediaOutput, MediaStream};
use voxline::sdp::Codec;

/// The RTP payloads the stream sends up to its next deadline.
fn sent(s: &mut MediaStream) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        match s.poll_output() {
            MediaOutput::Timeout(_) => return out,
            MediaOutput::Transmit { payload, rtcp, .. } if !rtcp => {
                let p = RtpPacket::parse(&payload).expect("rtp");
                out.push(p.payload.to_vec());
            }
            _ => {}
        }
    }
}

#[test]
fn a_stalled_worker_catches_up_with_the_agents_audio_not_silence() {
    let t0 = Instant::now();
    let mut s = MediaStream::new(
        config(
            session(Codec::Pcmu, addr("192.0.2.1:4000"), false, false),
            7,
            3,
            t0,
        ),
        t0,
    )
    .expect("stream");
    let (control_tx, _control_rx) = mpsc::channel(64);
    let (events_tx, events_rx) = mpsc::channel(64);
    let (notices_tx, _notices_rx) = mpsc::channel(64);
    let mut bridge = Bridge::new(
        control_tx,
        events_rx,
        AudioFormat::Pcmu8k,
        notices_tx,
        t0,
        &Voice::default(),
        8000,
        160,
    );
    // Two seconds of reply audio, all there at once; no code is μ-law silence (0xFF).
    let audio: Vec<u8> = (0..16_000).map(|i| (i % 200) as u8 + 1).collect();
    events_tx
        .try_send(BackendEvent::ResponseStarted)
        .expect("event");
    events_tx
        .try_send(BackendEvent::Audio(AudioChunk {
            format: AudioFormat::Pcmu8k,
            data: audio.clone().into(),
        }))
        .expect("event");
    let mut wire = Vec::new();
    let mut tick = |now: Instant, s: &mut MediaStream, wire: &mut Vec<Vec<u8>>| {
        let _ = bridge.pump(s, now);
        s.handle_timeout(now);
        wire.extend(sent(s));
    };
    // Ten ticks on time, a 100 ms stall (five ticks missed), then on time again.
    for k in 0..10 {
        tick(t0 + ms(20 * k), &mut s, &mut wire);
    }
    tick(t0 + ms(20 * 15), &mut s, &mut wire);
    for k in 16..30 {
        tick(t0 + ms(20 * k), &mut s, &mut wire);
    }
    assert_eq!(
        wire.len(),
        30,
        "one packet per tick, the missed ones included"
    );
    let first = wire
        .iter()
        .position(|p| p.iter().any(|&b| b != 0xFF))
        .expect("the reply was played");
    let played: Vec<u8> = wire[first..].concat();
    assert_eq!(
        played,
        audio[..played.len()],
        "the reply plays without a hole: the catch-up took its frames from the queue"
    );
}
