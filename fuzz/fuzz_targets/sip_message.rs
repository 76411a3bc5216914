//! The SIP message parser (voxline's checks, then rsip) on any bytes as a UDP datagram, and
//! the same bytes as a TCP stream cut into pieces, through the stream framer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use voxline::sip::message::{Frame, Limits, StreamFramer, parse};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let _ = parse(data, &limits);
    let cut = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut framer = StreamFramer::new();
    for piece in data.chunks(cut) {
        framer.push(piece);
        while let Some(frame) = framer.next_frame(&limits) {
            match frame {
                Frame::Message(m) => {
                    let _ = parse(&m, &limits);
                }
                Frame::Ping => {}
                Frame::Broken(_) => return,
            }
        }
    }
});
