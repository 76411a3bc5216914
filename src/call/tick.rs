//! One frame tick of a call whose agent runs in-process (echo, play, a realtime call's
//! fallback, and the DSP chain to come): the caller's frame reaches the agent before the
//! tick's packet leaves, so the agent's reply goes out in the same tick, not 20 ms later.

use std::time::Instant;

use crate::agent::{AgentAction, LocalAgent};
use crate::media::stream::MediaStream;

/// What one tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticked {
    /// The local agent's answer (`Continue` on hold, when the agent is not asked).
    pub(crate) action: AgentAction,
    /// The agent's audio did not fit the outbound queue and was dropped.
    pub(crate) dropped: bool,
}

/// Runs the earliest tick of `stream` due at `now`, if any: takes the caller's frame, lets
/// `agent` answer it into `out` (a reused buffer) while the stream sends, queues the answer,
/// then sends the tick's packet and emits its `Frame` event. On hold the agent is not asked
/// (it would answer hold music, and its audio would play late after the resume). `None` when
/// no tick is due.
pub(crate) fn run_tick(
    stream: &mut MediaStream,
    agent: &mut dyn LocalAgent,
    out: &mut Vec<i16>,
    now: Instant,
) -> Option<Ticked> {
    let sending = stream.is_sending();
    out.clear();
    let caller = stream.start_tick(now)?;
    let action = if sending {
        agent.on_frame(caller, out)
    } else {
        AgentAction::Continue
    };
    let dropped = !out.is_empty() && stream.send_audio(out).is_err();
    stream.finish_tick();
    Some(Ticked { action, dropped })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::agent::{Echo, FrameFormat};
    use crate::media::codec::g711::ulaw_decode;
    use crate::media::rtcp::{NtpClock, NtpTime};
    use crate::media::rtp::{RTP_HEADER_LEN, RtpHeader, RtpTimestamp, SeqNo, Ssrc};
    use crate::media::stream::{MediaConfig, MediaOutput};
    use crate::sdp::{Codec, Direction, NegotiatedCodec, NegotiatedMedia, PayloadType};

    const FRAME: Duration = Duration::from_millis(20);
    const SAMPLES: usize = 160;
    /// How long after its tick each caller packet arrives.
    const LAG: Duration = Duration::from_millis(3);

    fn peer() -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 10], 40000))
    }

    fn stream(t0: Instant) -> MediaStream {
        let negotiated = NegotiatedMedia {
            remote_rtp: peer(),
            remote_rtcp: None,
            codec: NegotiatedCodec {
                codec: Codec::Pcmu,
                payload_type: PayloadType::new(0).expect("static PT"),
                clock_rate: 8000,
                channels: 1,
                fmtp: None,
            },
            telephone_event: None,
            ptime_ms: 20,
            direction: Direction::SendRecv,
            rtcp_mux: true,
            remote_hold: false,
            srtp: None,
        };
        let ntp = NtpClock::new(t0, NtpTime::from_unix(Duration::from_secs(1_700_000_000)));
        let cfg = MediaConfig::new(negotiated, Ssrc(0xb), "echo@test", ntp, 9);
        MediaStream::new(cfg, t0).expect("stream")
    }

    /// Frame `k`'s μ-law code: distinct for the first 96 frames, never 0x7F ("negative
    /// zero", which re-encodes as 0xFF) or 0xFF (silence).
    fn code(k: usize) -> u8 {
        0x10 + (k % 96) as u8
    }

    /// Plays 50 caller frames, each arriving `LAG` after its tick, into a stream whose echo
    /// agent is driven by `tick`, and returns for every echoed frame the time from its
    /// packet's arrival to the echo's packet leaving, and the jitter buffer's delay.
    fn round_trips(
        mut tick: impl FnMut(&mut MediaStream, &mut Echo, &mut Vec<i16>, Instant) -> bool,
    ) -> (Vec<Duration>, Duration) {
        let t0 = Instant::now();
        let mut s = stream(t0);
        let format = FrameFormat::new(8000, FRAME).expect("format");
        let mut echo = Echo::new(format, Duration::ZERO);
        let mut out = Vec::new();
        let mut arrived = Vec::new();
        let mut trips: Vec<Option<Duration>> = vec![None; 50];
        let step = Duration::from_millis(1);
        let mut now = t0;
        while now < t0 + FRAME * 60 {
            let k = arrived.len();
            if k < 50 && now >= t0 + FRAME * k as u32 + LAG {
                let header = RtpHeader {
                    marker: k == 0,
                    payload_type: PayloadType::new(0).expect("static PT"),
                    seq: SeqNo(1000 + k as u16),
                    timestamp: RtpTimestamp(5000 + (k * SAMPLES) as u32),
                    ssrc: Ssrc(0xa),
                };
                let mut packet = vec![0u8; RTP_HEADER_LEN + SAMPLES];
                header
                    .write_packet(&[code(k); SAMPLES], &mut packet)
                    .expect("packet");
                s.handle_rtp(now, peer(), &packet);
                arrived.push(now);
            }
            while tick(&mut s, &mut echo, &mut out, now) {}
            s.handle_timeout(now);
            loop {
                match s.poll_output() {
                    MediaOutput::Transmit { payload, rtcp, .. } => {
                        let first = payload.get(RTP_HEADER_LEN).copied();
                        if !rtcp
                            && let Some(k) = (0..arrived.len()).find(|&k| Some(code(k)) == first)
                            && let Some(&at) = arrived.get(k)
                        {
                            assert_eq!(
                                ulaw_decode(code(k)),
                                ulaw_decode(first.unwrap_or(0xff)),
                                "frame {k}"
                            );
                            // The first packet carrying frame k (concealment repeats the last).
                            if let Some(t @ None) = trips.get_mut(k) {
                                *t = Some(now - at);
                            }
                        }
                        s.recycle_packet(payload);
                    }
                    MediaOutput::Event(_) => {}
                    MediaOutput::Timeout(_) => break,
                }
            }
            now += step;
        }
        let delay = Duration::from_secs_f64(s.stats().jitter_buffer_current_ms / 1000.0);
        (trips.into_iter().flatten().collect(), delay)
    }

    #[test]
    fn a_local_echo_leaves_in_the_tick_that_played_the_callers_frame() {
        let (trips, jitter_delay) = round_trips(|s, echo, out, now| {
            run_tick(s, echo, out, now).is_some_and(|t| {
                assert!(!t.dropped);
                assert_eq!(t.action, AgentAction::Continue);
                true
            })
        });
        assert!(trips.len() >= 45, "only {} frames echoed", trips.len());
        // Arrival to the tick that plays it: the jitter buffer's delay less the lag; that
        // tick sends the echo. Nothing adds a frame.
        for (k, rt) in trips.iter().enumerate() {
            assert!(
                *rt <= jitter_delay,
                "frame {k}: round trip {rt:?} over the jitter buffer's {jitter_delay:?}"
            );
        }
    }

    #[test]
    fn answering_after_the_send_costs_a_whole_frame() {
        // The order before the split tick: the tick sends, then the agent answers its frame,
        // and the answer waits for the next tick.
        let (late, _) = round_trips(|s, echo, out, now| {
            let Some(caller) = s.start_tick(now).map(<[i16]>::to_vec) else {
                return false;
            };
            s.finish_tick();
            out.clear();
            echo.on_frame(&caller, out);
            s.send_audio(out).expect("queue");
            true
        });
        let (same, _) = round_trips(|s, echo, out, now| run_tick(s, echo, out, now).is_some());
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        assert_eq!(median(late) - median(same), FRAME);
    }
}
