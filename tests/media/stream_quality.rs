//! Honest call-quality figures: statistics come only from packets the stream accepted,
//! interarrival jitter follows RFC 3550 A.8 for any packet size (and is not rounded away
//! below one timestamp unit), loss counts survive SSRC changes (per source and in total),
//! garbage sprayed at the port moves neither jitter nor loss nor MOS, and a clean G.711 call
//! reports MOS >= 4.3 whatever the packetisation.

use crate::media_stream_support;

use std::time::{Duration, Instant};

use media_stream_support::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use voxline::media::stream::{MediaStats, MediaStream};
use voxline::sdp::Codec;

const PEER: &str = "192.0.2.1:4000";

fn stream(t0: Instant) -> MediaStream {
    MediaStream::new(
        config(session(Codec::Pcmu, addr(PEER), false, false), 7, 3, t0),
        t0,
    )
    .expect("stream")
}

/// A PCMU sender of `ptime` ms packets.
struct Sender {
    ssrc: u32,
    seq: u16,
    ts: u32,
    ptime: u64,
}

impl Sender {
    fn new(ssrc: u32, seq: u16, ts: u32, ptime: u64) -> Self {
        Self {
            ssrc,
            seq,
            ts,
            ptime,
        }
    }

    /// The next packet.
    fn next(&mut self, marker: bool) -> Vec<u8> {
        let n = (self.ptime * 8) as usize;
        let p = rtp(0, self.seq, self.ts, self.ssrc, marker, &vec![0x55; n]);
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(n as u32);
        p
    }
}

/// Feeds `count` packets of `tx`, packet k arriving at `start + k × ptime + offset(k)`, and
/// runs the stream's ticks along; packets for which `lose(k)` are not delivered.
fn feed(
    s: &mut MediaStream,
    tx: &mut Sender,
    start: Instant,
    count: u64,
    offset: impl Fn(u64) -> Duration,
    lose: impl Fn(u64) -> bool,
) -> Instant {
    let mut last = start;
    for k in 0..count {
        let pkt = tx.next(k == 0);
        let at = start + ms(k * tx.ptime) + offset(k);
        s.handle_timeout(at);
        drain(s);
        if !lose(k) {
            s.handle_rtp(at, addr(PEER), &pkt);
        }
        last = at;
    }
    s.handle_timeout(last);
    drain(s);
    last
}

fn near(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn jitter_follows_a8_for_any_packet_size() {
    // Arrivals alternately 2 ms late and on time: |D| = 2 ms for every pair, so the A.8
    // estimate converges to 2 ms whatever the packets hold.
    for ptime in [10, 20, 30, 60] {
        let t0 = Instant::now();
        let mut s = stream(t0);
        let mut tx = Sender::new(1, 100, 5000, ptime);
        feed(
            &mut s,
            &mut tx,
            t0,
            400,
            |k| ms(20 + 2 * (k % 2)),
            |_| false,
        );
        let st = s.stats();
        assert!(
            near(st.jitter_ms, 2.0, 0.1),
            "{ptime} ms packets: jitter {} ms",
            st.jitter_ms
        );
    }
}

#[test]
fn sub_tick_jitter_is_not_rounded_to_zero() {
    // 60 µs of alternating delay: half a timestamp unit at 8 kHz. A.8 keeps sixteenths.
    let t0 = Instant::now();
    let mut s = stream(t0);
    let mut tx = Sender::new(1, 100, 5000, 30);
    feed(
        &mut s,
        &mut tx,
        t0,
        400,
        |k| ms(20) + Duration::from_micros(60 * (k % 2)),
        |_| false,
    );
    let j = s.stats().jitter_ms;
    assert!(j > 0.02 && j < 0.1, "jitter {j} ms");
}

#[test]
fn clean_calls_report_mos_of_g711_for_any_packetisation() {
    for ptime in [10, 20, 30, 40, 60] {
        let t0 = Instant::now();
        let mut s = stream(t0);
        let mut tx = Sender::new(1, 100, 5000, ptime);
        let mut rng = StdRng::seed_from_u64(ptime);
        let jitter: Vec<u64> = (0..3000).map(|_| rng.gen_range(0..3000)).collect();
        feed(
            &mut s,
            &mut tx,
            t0,
            20_000 / ptime,
            |k| ms(20) + Duration::from_micros(jitter[k as usize % 3000]),
            |_| false,
        );
        let st = s.stats();
        assert!(st.mos >= 4.3, "{ptime} ms packets: {st:?}");
        assert_eq!((st.dropped_late, st.packets_lost), (0, 0), "{st:?}");
        assert!(st.jitter_ms > 0.1 && st.jitter_ms < 3.0, "{st:?}");
    }
}

#[test]
fn loss_counts_survive_an_ssrc_change() {
    let t0 = Instant::now();
    let mut s = stream(t0);
    // Source A: 100 packets, 5 lost in the middle.
    let mut a = Sender::new(0xA, 1000, 5000, 20);
    let end = feed(
        &mut s,
        &mut a,
        t0,
        100,
        |_| ms(20),
        |k| (40..45).contains(&k),
    );
    // Source B (a transfer): 100 packets, 3 lost; its first is taken by probation (counted
    // as received by neither source, so not as lost either).
    let mut b = Sender::new(0xB, 40_000, 9_000_000, 30);
    feed(
        &mut s,
        &mut b,
        end + ms(20),
        100,
        |_| ms(20),
        |k| [10, 50, 51].contains(&k),
    );
    let st: MediaStats = s.stats();
    assert_eq!(st.ssrc_changes, 1, "{st:?}");
    // Per source: B's 99 from its second packet, 3 lost.
    assert_eq!(
        (st.source_packets_expected, st.source_packets_lost),
        (99, 3)
    );
    // In total: A's 100 with 5 lost, and B's.
    assert_eq!((st.packets_expected, st.packets_lost), (199, 8), "{st:?}");
    assert_eq!(st.packets_received, 100 - 5 + 99 - 3);
}

#[test]
fn garbage_sprayed_at_the_port_moves_no_figure() {
    let run = |spray: bool| -> MediaStats {
        let t0 = Instant::now();
        let mut s = stream(t0);
        let mut tx = Sender::new(0xCAFE, 100, 5000, 20);
        let mut rng = StdRng::seed_from_u64(9);
        for k in 0..500u64 {
            let at = t0 + ms(k * 20 + 20);
            s.handle_timeout(at);
            drain(&mut s);
            s.handle_rtp(at, addr(PEER), &tx.next(k == 0));
            if spray {
                for _ in 0..20 {
                    // Random bytes, random RTP of the stream's payload type, and RTP with the
                    // stream's own SSRC (sniffed) but random sequence numbers and timestamps.
                    let len = rng.gen_range(0..200);
                    let junk: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
                    s.handle_rtp(at, addr(PEER), &junk);
                    let body = vec![0u8; 160];
                    let seq = rng.r#gen();
                    let forged = rtp(0, seq, rng.r#gen(), rng.r#gen(), false, &body);
                    s.handle_rtp(at, addr(PEER), &forged);
                    let sniffed = rtp(0, seq, rng.r#gen(), 0xCAFE, false, &body);
                    s.handle_rtp(at, addr(PEER), &sniffed);
                }
            }
        }
        s.stats()
    };
    let clean = run(false);
    let sprayed = run(true);
    assert!(sprayed.dropped_implausible > 0, "{sprayed:?}");
    assert_eq!(sprayed.jitter_ms, clean.jitter_ms, "{sprayed:?}");
    assert_eq!(sprayed.mos, clean.mos, "{sprayed:?}");
    assert!(sprayed.mos >= 4.3);
    assert_eq!(sprayed.concealment_ratio, clean.concealment_ratio);
    assert_eq!(sprayed.packets_received, clean.packets_received);
    // A sniffed-SSRC packet with a random sequence number would open a phantom gap, but its
    // timestamp is off the timeline, so it never reaches the sequence state.
    assert_eq!(
        (sprayed.packets_expected, sprayed.packets_lost),
        (clean.packets_expected, clean.packets_lost)
    );
}

#[test]
fn a_sender_that_restarts_its_timestamps_is_followed_from_its_second_packet() {
    let t0 = Instant::now();
    let mut s = stream(t0);
    let mut tx = Sender::new(0xCAFE, 100, 5000, 20);
    let end = feed(&mut s, &mut tx, t0, 100, |_| ms(20), |_| false);
    // Same SSRC and sequence, timestamps from elsewhere (a B2BUA bridged another leg).
    tx.ts = 3_000_000_000;
    feed(&mut s, &mut tx, end + ms(20), 100, |_| ms(20), |_| false);
    let st = s.stats();
    // The first packet on the new timeline waits for confirmation and is dropped: it is
    // honestly counted as lost, and it is the only one.
    assert_eq!(st.dropped_implausible, 1, "{st:?}");
    assert_eq!(st.packets_received, 199, "{st:?}");
    assert_eq!(st.packets_lost, 1, "{st:?}");
    assert!(st.jitter_ms < 0.5, "no jump in the jitter: {st:?}");
}
