//! Measurements shared by the voice chain's bench and the candidates' comparison
//! (`crates/dsp-candidates`, through `#[path]`): the agent's speech pool, ERLE over time,
//! SNR by segmentation.

#![allow(dead_code)]

use anyhow::Result;

use super::signals::{self, Call, FRAME, RATE, db, energy};

/// Samples as floats.
pub fn to_f32(x: &[i16]) -> Vec<f32> {
    x.iter().map(|s| f32::from(*s)).collect()
}

/// The agent's side: every sentence in every voice, 300 ms apart, as a pool to loop.
pub fn agent_pool() -> Result<Vec<f32>> {
    let mut v = Vec::new();
    for (i, voice) in signals::VOICES.iter().enumerate() {
        for k in 0..signals::SENTENCES.len() {
            let s = signals::speak(
                voice,
                signals::SENTENCES[(k + i) % signals::SENTENCES.len()],
            )
            .map_err(anyhow::Error::msg)?;
            v.extend(s.iter().map(|x| f32::from(*x)));
            v.extend(std::iter::repeat_n(0.0, RATE * 3 / 10));
        }
    }
    Ok(v)
}

/// `len` samples of `pool` from `from`, wrapping round.
pub fn looped(pool: &[f32], from: usize, len: usize) -> Vec<f32> {
    (0..len).map(|n| pool[(from + n) % pool.len()]).collect()
}

/// ERLE per 500 ms window where the echo is active: (window start in s, dB).
pub fn erle_windows(call: &Call, out: &[i16]) -> Vec<(f32, f64)> {
    let w = RATE / 2;
    let cap = to_f32(&call.capture);
    let o = to_f32(out);
    (0..call.capture.len() / w)
        .filter_map(|i| {
            let r = i * w..(i + 1) * w;
            let e_echo = energy(&call.echo[r.clone()]);
            // Windows where the echo is at least 30 dB above the line's noise floor and
            // -60 dBFS.
            let floor =
                (w as f64 * (32768.0f64 * 1e-3).powi(2)).max(1e3 * energy(&call.noise[r.clone()]));
            (e_echo > floor).then(|| (i as f32 * 0.5, db(energy(&cap[r.clone()]), energy(&o[r]))))
        })
        .collect()
}

/// When ERLE reaches `goal` and stays there (seconds), if it does.
pub fn settles(w: &[(f32, f64)], from: f32, goal: f64) -> Option<f32> {
    let w: Vec<_> = w.iter().filter(|(t, _)| *t >= from).collect();
    let last_bad = w.iter().rposition(|(_, e)| *e < goal);
    match last_bad {
        None => w.first().map(|(t, _)| *t),
        Some(i) => w.get(i + 1).map(|(t, _)| *t + 0.5),
    }
}

/// The median (NaN for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// SNR (dB) by segmentation: noise power from the frames where the caller is silent, speech
/// power from the frames where they talk, less that noise.
pub fn snr_of(x: &[f32], on: &[bool]) -> f64 {
    let (mut s, mut ns, mut n, mut nn) = (0.0, 0usize, 0.0, 0usize);
    for (k, f) in x.chunks(FRAME).enumerate().skip(50) {
        if on.get(k).copied().unwrap_or(false) {
            s += energy(f);
            ns += 1;
        } else {
            n += energy(f);
            nn += 1;
        }
    }
    let pn = n / nn.max(1) as f64;
    let ps = (s / ns.max(1) as f64 - pn).max(1e-3);
    db(ps, pn)
}

/// Barge-in trial `t`'s caller: `lead` samples of silence, then one of the callers'
/// sentences in one of the voices (both chosen by `t`) at -20 dBFS.
pub fn caller_trial(t: usize, lead: usize) -> Result<Vec<f32>> {
    let voice = signals::VOICES[t % signals::VOICES.len()];
    let mut near = vec![0f32; lead];
    let mut n = to_f32(
        &signals::speak(
            voice,
            signals::CALLER_SENTENCES[t % signals::CALLER_SENTENCES.len()],
        )
        .map_err(anyhow::Error::msg)?,
    );
    signals::set_level(&mut n, -20.0);
    near.extend(n);
    Ok(near)
}

/// The caller's onset in `near`: the first 10 ms block within 30 dB of its loudest.
pub fn onset_block(near: &[f32]) -> usize {
    let blocks: Vec<f64> = near.chunks(RATE / 100).map(energy).collect();
    let peak = blocks.iter().copied().fold(0.0, f64::max);
    blocks.iter().position(|e| *e > peak * 1e-3).unwrap_or(0)
}
