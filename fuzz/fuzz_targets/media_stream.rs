//! A whole media stream (latching, RTP validation, the jitter buffer, decoding or
//! concealment, DTMF, RTCP) fed any datagrams: the first byte picks the codec, the rest is
//! cut into datagrams by its length bytes, each followed by a tick or two.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use voxline::media::rtcp::{NtpClock, NtpTime};
use voxline::media::rtp::Ssrc;
use voxline::media::stream::{MediaConfig, MediaOutput, MediaStream};
use voxline::sdp::{Codec, Direction, NegotiatedCodec, NegotiatedMedia, PayloadType};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, mut rest)) = data.split_first() else {
        return;
    };
    let (codec, pt) = match pick % 4 {
        0 => (Codec::Pcmu, 0),
        1 => (Codec::Pcma, 8),
        2 => (Codec::G722, 9),
        _ => (Codec::Opus, 111),
    };
    let peer = "192.0.2.1:4000".parse().expect("address");
    let negotiated = NegotiatedMedia {
        remote_rtp: peer,
        remote_rtcp: None,
        codec: NegotiatedCodec {
            codec,
            payload_type: PayloadType::new(pt).expect("payload type"),
            clock_rate: codec.clock_rate(),
            channels: codec.channels(),
            fmtp: None,
        },
        telephone_event: PayloadType::new(101),
        ptime_ms: 20,
        direction: Direction::SendRecv,
        rtcp_mux: true,
        remote_hold: false,
    };
    let t0 = Instant::now();
    let config = MediaConfig::new(
        negotiated,
        Ssrc::new(1),
        "fuzz@voxline",
        NtpClock::new(t0, NtpTime::new(0)),
        1,
    );
    let Ok(mut stream) = MediaStream::new(config, t0) else {
        return;
    };
    let mut now = t0;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (datagram, after) = tail.split_at(n);
        rest = after;
        stream.handle_rtp(now, peer, datagram);
        now += Duration::from_millis(u64::from(len % 45));
        stream.handle_timeout(now);
        while !matches!(stream.poll_output(), MediaOutput::Timeout(_)) {}
    }
});
