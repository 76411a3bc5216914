//! Call-quality estimate: a simplified ITU-T G.107 E-model giving the transmission rating R
//! and the MOS-CQE derived from it.
//!
//! `R = R0 - Idd(Ta) - Ie,eff`, with
//! * `R0 = 93.2`, the G.107 default for `Ro - Is` (and `A = 0`);
//! * `Idd`, the G.107 §7.3 delay impairment for an absolute one-way delay `Ta`; here
//!   `Ta = one-way delay + JITTER_DELAY_FACTOR × jitter`, folding jitter in as the playout
//!   delay a jitter buffer adds to absorb it. The talker- and listener-echo terms (Idte, Idle)
//!   are left out: echo is assumed controlled (the G.107 defaults make them near zero);
//! * `Ie,eff = Ie + (95 - Ie) × Ppl / (Ppl / BurstR + Bpl)` (G.107 §7.4), with `Ie` and `Bpl`
//!   from ITU-T G.113 Appendix I.
//!
//! This is the narrowband model: wideband codecs (G.722, Opus) are rated on the same 0–100
//! scale as G.711 (G.107.1's extended scale is not modelled), so their MOS tops out at 4.41.

use std::time::Duration;

use crate::sdp::Codec;

/// Default transmission rating `Ro - Is` with every other G.107 parameter at its default
/// (ITU-T G.107 §7.7, table 3): 93.2.
pub const DEFAULT_R: f64 = 93.2;

/// Ceiling of `Ie,eff`: the loss term tends to 95 (ITU-T G.107 §7.4, eq. 7-29).
pub const IE_EFF_MAX: f64 = 95.0;

/// Delay below which `Idd` is zero, in ms (ITU-T G.107 §7.3, eq. 7-27: `Ta <= 100 ms`).
pub const IDD_THRESHOLD_MS: f64 = 100.0;

/// How many times the interarrival jitter a jitter buffer adds as playout delay, for folding
/// jitter into `Ta` (a rule of thumb, not part of G.107).
pub const JITTER_DELAY_FACTOR: f64 = 2.0;

/// A codec's equipment impairment factor `Ie` and packet-loss robustness `Bpl`
/// (ITU-T G.113 Appendix I).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodecImpairment {
    /// Equipment impairment factor `Ie`.
    pub ie: f64,
    /// Packet-loss robustness factor `Bpl`.
    pub bpl: f64,
}

impl CodecImpairment {
    /// G.711 with packet-loss concealment (G.711 Appendix I): Ie 0, Bpl 25.1 (G.113 App. I).
    pub const G711_PLC: Self = Self { ie: 0.0, bpl: 25.1 };

    /// The values voxline uses for a negotiated codec (it always conceals losses).
    ///
    /// G.722 and Opus have no narrowband `Ie`/`Bpl` in G.113; they are rated as G.711 with
    /// PLC (Ie 0 on the narrowband scale, which they at least match; Bpl 25.1), an
    /// approximation. telephone-event is not audio and gets the same values.
    pub fn for_codec(codec: Codec) -> Self {
        match codec {
            Codec::Pcmu | Codec::Pcma | Codec::G722 | Codec::Opus | Codec::TelephoneEvent => {
                Self::G711_PLC
            }
        }
    }
}

/// What the E-model is fed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityInput {
    /// The codec's impairment factors.
    pub codec: CodecImpairment,
    /// Packet loss in percent (0–100), e.g. from RTCP fraction lost × 100 / 256, including
    /// packets the jitter buffer discarded as late.
    pub packet_loss_percent: f64,
    /// Burst ratio `BurstR` (1 for random loss, > 1 for bursty loss, G.107 §7.4).
    pub burst_ratio: f64,
    /// One-way mouth-to-ear delay without jitter buffering (e.g. RTT / 2 + codec delay).
    pub one_way_delay: Duration,
    /// Interarrival jitter (RFC 3550 A.8), folded into the delay.
    pub jitter: Duration,
}

/// The E-model result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QualityEstimate {
    /// Transmission rating R (0–100 on the narrowband scale).
    pub r: f64,
    /// MOS-CQE from R (1.0–4.5).
    pub mos: f64,
    /// The delay impairment `Idd` used.
    pub delay_impairment: f64,
    /// The effective equipment impairment `Ie,eff` used.
    pub equipment_impairment: f64,
}

/// Runs the simplified E-model on `input`.
pub fn estimate(input: &QualityInput) -> QualityEstimate {
    let ta = input.one_way_delay.as_secs_f64() * 1000.0
        + JITTER_DELAY_FACTOR * input.jitter.as_secs_f64() * 1000.0;
    let idd = delay_impairment(ta);
    let ie_eff =
        effective_equipment_impairment(input.codec, input.packet_loss_percent, input.burst_ratio);
    let r = (DEFAULT_R - idd - ie_eff).clamp(0.0, 100.0);
    QualityEstimate {
        r,
        mos: mos_from_r(r),
        delay_impairment: idd,
        equipment_impairment: ie_eff,
    }
}

/// MOS-CQE from R (ITU-T G.107 Annex B, eq. B-4): 1 for R < 0, 4.5 for R > 100, else
/// `1 + 0.035 R + R (R - 60) (100 - R) × 7e-6`.
pub fn mos_from_r(r: f64) -> f64 {
    if r.is_nan() || r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6
    }
}

/// `Idd` for an absolute one-way delay of `ta_ms` milliseconds (ITU-T G.107 §7.3, eq. 7-27):
/// 0 up to 100 ms, else `25 {(1 + X^6)^(1/6) - 3 (1 + (X/3)^6)^(1/6) + 2}` with
/// `X = log2(Ta / 100)`.
pub fn delay_impairment(ta_ms: f64) -> f64 {
    if ta_ms.is_nan() || ta_ms <= IDD_THRESHOLD_MS {
        return 0.0;
    }
    let x = (ta_ms / IDD_THRESHOLD_MS).log2();
    25.0 * ((1.0 + x.powi(6)).powf(1.0 / 6.0) - 3.0 * (1.0 + (x / 3.0).powi(6)).powf(1.0 / 6.0)
        + 2.0)
}

/// `Ie,eff = Ie + (95 - Ie) × Ppl / (Ppl / BurstR + Bpl)` (ITU-T G.107 §7.4, eq. 7-29);
/// `loss_percent` is clamped to 0–100, `burst_ratio` to at least 1, the result to at most 95.
pub fn effective_equipment_impairment(
    codec: CodecImpairment,
    loss_percent: f64,
    burst_ratio: f64,
) -> f64 {
    let ppl = if loss_percent.is_nan() {
        0.0
    } else {
        loss_percent.clamp(0.0, 100.0)
    };
    let burst = if burst_ratio.is_nan() {
        1.0
    } else {
        burst_ratio.max(1.0)
    };
    let denom = ppl / burst + codec.bpl;
    if denom <= 0.0 {
        return codec.ie;
    }
    (codec.ie + (IE_EFF_MAX - codec.ie) * ppl / denom).min(IE_EFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(loss: f64, delay_ms: u64, jitter_ms: u64) -> QualityInput {
        QualityInput {
            codec: CodecImpairment::G711_PLC,
            packet_loss_percent: loss,
            burst_ratio: 1.0,
            one_way_delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
        }
    }

    #[test]
    fn mos_known_points() {
        assert!(
            (mos_from_r(93.2) - 4.41).abs() < 0.005,
            "{}",
            mos_from_r(93.2)
        );
        assert_eq!(mos_from_r(-3.0), 1.0);
        assert_eq!(mos_from_r(0.0), 1.0);
        assert_eq!(mos_from_r(100.0), 4.5);
        assert_eq!(mos_from_r(f64::NAN), 1.0);
        // R = 50: 1 + 1.75 + 50 × -10 × 50 × 7e-6 = 2.575.
        assert!((mos_from_r(50.0) - 2.575).abs() < 1e-9);
    }

    #[test]
    fn perfect_g711_call_rates_93_2() {
        let e = estimate(&input(0.0, 20, 5));
        assert_eq!(e.r, DEFAULT_R);
        assert!((e.mos - 4.41).abs() < 0.005);
        assert_eq!(e.delay_impairment, 0.0);
        assert_eq!(e.equipment_impairment, 0.0);
    }

    #[test]
    fn loss_and_delay_lower_the_rating_monotonically() {
        let mut last = estimate(&input(0.0, 50, 0));
        for loss in [0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0] {
            let e = estimate(&input(loss, 50, 0));
            assert!(e.equipment_impairment > last.equipment_impairment);
            assert!(e.r < last.r && e.mos < last.mos, "loss {loss}: {e:?}");
            last = e;
        }
        // 5 % random loss with PLC: Ie,eff = 95 × 5 / 30.1 = 15.78, R = 77.4, MOS ≈ 3.92.
        let five = estimate(&input(5.0, 50, 0));
        assert!((five.r - 77.42).abs() < 0.01, "{five:?}");
        assert!((five.mos - 3.92).abs() < 0.01, "{five:?}");
        let mut last = estimate(&input(0.0, 100, 0));
        for delay in [150, 200, 300, 400, 600] {
            let e = estimate(&input(0.0, delay, 0));
            assert!(e.r < last.r, "delay {delay}: {e:?}");
            last = e;
        }
        // Jitter counts double: 100 ms + 2 × 50 ms rates like 200 ms.
        assert_eq!(
            estimate(&input(0.0, 100, 50)).r,
            estimate(&input(0.0, 200, 0)).r
        );
    }

    #[test]
    fn idd_known_points() {
        assert_eq!(delay_impairment(50.0), 0.0);
        assert_eq!(delay_impairment(100.0), 0.0);
        assert!((delay_impairment(200.0) - 3.05).abs() < 0.05);
        assert!((delay_impairment(400.0) - 24.1).abs() < 0.2);
    }

    #[test]
    fn ie_eff_saturates_and_burst_hurts() {
        let c = CodecImpairment::G711_PLC;
        assert_eq!(effective_equipment_impairment(c, 0.0, 1.0), 0.0);
        let random = effective_equipment_impairment(c, 5.0, 1.0);
        let bursty = effective_equipment_impairment(c, 5.0, 2.0);
        assert!(bursty > random, "{bursty} > {random}");
        // 100 % random loss: 95 × 100 / 125.1.
        assert!((effective_equipment_impairment(c, 100.0, 1.0) - 75.94).abs() < 0.01);
        assert_eq!(effective_equipment_impairment(c, 100.0, 1e9), IE_EFF_MAX);
    }
}
