//! The voice chain on real speech (espeak-ng) through simulated echo paths: the agent's echo
//! never starts speech, not even while the canceller re-converges after the echo path
//! changes (the leak guard); a caller talking over the agent starts speech within the
//! minimum speech time plus 60 ms of the onset; and the caller is barely attenuated in
//! double talk. The full measurements are the bench's (tools/dsp_bench, docs/dsp.md).

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::signals::{self, Call, EchoPath, FRAME, RATE, Rng};
use voxline::dsp::StageClock;
use voxline::dsp::chain::{Chain, ChainConfig};
use voxline::dsp::speech::SpeechEvent;

const TICK: Duration = Duration::from_millis(20);

struct Fake(Cell<Instant>);

impl StageClock for Fake {
    fn now(&self) -> Instant {
        self.0.get()
    }
}

/// The agent's side: sentences in three voices, looped to `len` samples.
fn agent(len: usize) -> Vec<f32> {
    let mut v = Vec::new();
    for voice in ["en-us", "en-gb+f3", "en-029"] {
        let t = signals::talk(voice, 1, 12.0, 300).expect("espeak-ng and sox");
        v.extend(t.iter().map(|s| f32::from(*s)));
    }
    (0..len).map(|n| v[n % v.len()]).collect()
}

/// Runs the default chain over `call`; the speech events with their frame index, and the
/// output.
fn run(call: &Call, t0: Instant) -> (Vec<(usize, SpeechEvent)>, Vec<i16>) {
    let mut chain = Chain::new(&ChainConfig::default(), RATE as u32, FRAME).expect("chain");
    let clock = Fake(Cell::new(t0));
    let mut events = Vec::new();
    let mut out = Vec::new();
    for k in 0..call.frames() {
        let r = k * FRAME..(k + 1) * FRAME;
        let mut f = call.capture[r.clone()].to_vec();
        let o = chain.process(t0 + TICK * (k as u32 + 1), &call.sent[r], &mut f, &clock);
        if let Some(e) = o.event {
            events.push((k, e));
        }
        out.extend(f);
    }
    (events, out)
}

#[test]
fn echo_never_starts_speech_even_when_the_echo_path_changes() {
    let len = RATE * 60;
    let mut rng = Rng(3);
    // 200 ms / 10 dB, then at 20 s 50 ms / 6 dB, then at 40 s 400 ms / 20 dB.
    let paths = [
        (0, EchoPath::new(&mut rng, 200, 10.0)),
        (RATE * 20, EchoPath::new(&mut rng, 50, 6.0)),
        (RATE * 40, EchoPath::new(&mut rng, 400, 20.0)),
    ];
    let noise = signals::white(&mut rng, len, -70.0);
    let call = Call::new(&agent(len), &paths, &[], &noise);
    let (events, _) = run(&call, Instant::now());
    assert!(events.is_empty(), "echo taken for the caller: {events:?}");
}

#[test]
fn a_caller_over_the_agent_is_heard_in_time_and_barely_attenuated() {
    let len = RATE * 14;
    let mut rng = Rng(4);
    for (i, voice) in ["en-us+m3", "en+f4", "en-gb-scotland"].iter().enumerate() {
        let at = RATE * 6 + rng.below(RATE);
        let mut near = vec![0f32; at];
        let mut said: Vec<f32> = signals::speak(voice, signals::CALLER_SENTENCES[i])
            .expect("espeak-ng and sox")
            .iter()
            .map(|s| f32::from(*s))
            .collect();
        signals::set_level(&mut said, -20.0);
        near.extend(said);
        let call = Call::new(
            &agent(len),
            &[(0, EchoPath::new(&mut rng, 200, 10.0))],
            &near,
            &signals::white(&mut rng, len, -70.0),
        );
        let t0 = Instant::now();
        let (events, out) = run(&call, t0);
        // The onset: the first 10 ms block within 30 dB of the caller's loudest.
        let blocks: Vec<f64> = call.near.chunks(RATE / 100).map(signals::energy).collect();
        let peak = blocks.iter().copied().fold(0.0, f64::max);
        let onset = blocks.iter().position(|e| *e > peak * 1e-3).unwrap() as u64 * 10;
        let starts: Vec<u64> = events
            .iter()
            .filter(|(_, e)| matches!(e, SpeechEvent::Started { .. }))
            .map(|(k, _)| (*k as u64 + 1) * 20)
            .collect();
        assert_eq!(starts.len(), 1, "{voice}: {events:?} (onset {onset} ms)");
        let after = starts[0]
            .checked_sub(onset)
            .expect("started before the onset");
        assert!(after <= 260, "{voice}: decided {after} ms after the onset");
        // Double talk: the caller's energy comes through within 3 dB.
        let on = signals::active_frames_within(&call.near, 60.0);
        let (mut e_in, mut e_out) = (0.0, 0.0);
        for (k, active) in on.iter().enumerate() {
            if *active && k * FRAME >= at {
                e_in += signals::energy(&call.near[k * FRAME..(k + 1) * FRAME]);
                e_out += signals::energy(&out[k * FRAME..(k + 1) * FRAME]);
            }
        }
        let attenuation = signals::db(e_in, e_out);
        assert!(
            attenuation <= 3.0,
            "{voice}: caller attenuated by {attenuation:.1} dB"
        );
    }
}
