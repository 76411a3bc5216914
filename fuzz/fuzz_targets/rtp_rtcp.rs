//! RTP header parsing, the receiver's validation, and RTCP compound parsing on any bytes.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use voxline::media::rtcp::parse_compound;
use voxline::media::rtp::{RtpPacket, RtpReceiver, RtpReceiverConfig};
use voxline::sdp::PayloadType;

fuzz_target!(|data: &[u8]| {
    let _ = RtpPacket::parse(data);
    let _ = parse_compound(data);
    let audio = PayloadType::new(0).expect("payload type");
    let event = PayloadType::new(101).expect("payload type");
    let mut rx = RtpReceiver::new(RtpReceiverConfig::new(8000, vec![audio], Some(event)));
    let now = Instant::now();
    // The datagram, then the same bytes in pieces as if each were a datagram.
    let _ = rx.receive(now, data);
    for piece in data.chunks(172) {
        let _ = rx.receive(now, piece);
    }
});
