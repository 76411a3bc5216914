//! Media ends with the call (issue 9: a BYE within a few ms of the 200, on one of the first
//! calls of a fresh process, was answered while echo RTP kept flowing, the ports stayed bound
//! and an "RTP timeout" later hung up the ended call). Five calls on a fresh voxline, each
//! BYEd the moment it is ACKed: voxline answers 200, echoes nothing afterwards, frees both
//! RTP ports, and sends no BYE of its own when the RTP timeout (2 s here) would have passed.

use crate::common;
use crate::media_peer;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::VoxlineProcess;
use media_peer::{RtpPeer, SipPeer, answer_rtp_addr, offer};

/// Whether `port` (RTP) and `port + 1` (RTCP) on voxline's side can be bound again within
/// `limit`: the media task let go of them.
fn freed_within(port: u16, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        let rtp = UdpSocket::bind(("0.0.0.0", port));
        let rtcp = UdpSocket::bind(("0.0.0.0", port + 1));
        if rtp.is_ok() && rtcp.is_ok() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_bye_right_after_the_ack_stops_media_and_frees_the_ports() {
    let vox = VoxlineProcess::spawn("[media]\nrtp_timeout_s = 2\n");
    let mut ended = Vec::new();
    for k in 0..5 {
        let mut rtp = RtpPeer::bind(0);
        let (mut sip, answer) = SipPeer::call(
            vox.sip_addr(),
            "echo",
            &offer(rtp.port(), 0, "PCMU", "sendrecv", 1),
        );
        assert_eq!(sip.bye(), 200, "call {k}");
        let to = answer_rtp_addr(&answer);
        // A frame the media worker was already sending when the BYE arrived may still land
        // (voxline sends a frame every 20 ms from the answer on): allow one tick in flight,
        // then nothing.
        let in_flight = rtp.collect(Duration::from_millis(100));
        assert!(
            in_flight.len() <= 2,
            "call {k}: {} RTP packets within 100 ms of the BYE's 200",
            in_flight.len()
        );
        for _ in 0..10 {
            rtp.send(to, &[0xff; 160], false);
        }
        let echoed = rtp.collect(Duration::from_millis(600));
        assert!(
            echoed.is_empty(),
            "call {k}: {} RTP packets after the BYE",
            echoed.len()
        );
        assert!(
            freed_within(to.port(), Duration::from_secs(3)),
            "call {k}: RTP port {} still bound after the BYE",
            to.port()
        );
        ended.push(sip);
    }
    // Past the RTP timeout: no call is hung up a second time.
    std::thread::sleep(Duration::from_millis(2500));
    for (k, sip) in ended.iter_mut().enumerate() {
        assert!(
            sip.wait_request("BYE", Duration::from_millis(100))
                .is_none(),
            "call {k}: voxline sent a BYE for a call that had ended"
        );
    }
}
