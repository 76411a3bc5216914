//! SDP offer/answer on any bytes: answering them as an offer, and accepting them as the
//! answer to our offer.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use voxline::sdp::{LocalMedia, SdpSession};

fuzz_target!(|data: &[u8]| {
    let local = LocalMedia::new(IpAddr::from([192, 0, 2, 1]), 40_000);
    let mut answerer = SdpSession::new(7);
    let _ = answerer.answer(data, &local);
    let mut offerer = SdpSession::new(8);
    let _ = offerer.create_offer(&local);
    let _ = offerer.accept_answer(data);
});
