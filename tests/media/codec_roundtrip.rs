//! Encode → decode round trips through `encoder_for`/`decoder_for` for every codec, with the
//! codec delay found by cross-correlation, plus Opus loss recovery: in-band FEC must rebuild a
//! lost frame better than plain concealment.

use std::f64::consts::PI;

use voxline::media::codec::{
    AudioDecoder, AudioEncoder, CodecError, OpusDecoder, OpusEncoder, decoder_for, encoder_for,
};
use voxline::sdp::{Codec, NegotiatedCodec, PayloadType};

fn negotiated(codec: Codec, pt: u8, fmtp: Option<&str>) -> NegotiatedCodec {
    NegotiatedCodec {
        codec,
        payload_type: PayloadType::new(pt).unwrap(),
        clock_rate: codec.clock_rate(),
        channels: codec.channels(),
        fmtp: fmtp.map(str::to_owned),
    }
}

fn sine(freq: f64, rate: u32, samples: usize, amplitude: f64) -> Vec<i16> {
    (0..samples)
        .map(|i| (amplitude * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin()) as i16)
        .collect()
}

/// Deterministic white-ish noise (a linear congruential generator), for delay measurement:
/// unlike a sine it correlates with itself at one lag only.
fn noise(samples: usize, amplitude: i32) -> Vec<i16> {
    let mut state = 0x1234_5678u32;
    (0..samples)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((i64::from(state >> 16) - 32768) * i64::from(amplitude) / 32768) as i16
        })
        .collect()
}

/// The codec delay in samples: noise through a fresh encoder/decoder pair, cross-correlated.
fn measure_delay(nc: &NegotiatedCodec, ptime: u32, max_delay: usize) -> usize {
    let mut enc = encoder_for(nc, ptime).unwrap();
    let mut dec = decoder_for(nc).unwrap();
    let input = noise(enc.frame_samples() * 25, 8000);
    let output = decode_all(dec.as_mut(), &encode_all(enc.as_mut(), &input));
    find_delay(&input, &output, max_delay)
}

/// Encodes `pcm` frame by frame and returns the payloads.
fn encode_all(enc: &mut dyn AudioEncoder, pcm: &[i16]) -> Vec<Vec<u8>> {
    let n = enc.frame_samples();
    pcm.chunks_exact(n)
        .map(|frame| {
            let mut payload = Vec::new();
            enc.encode(frame, &mut payload).unwrap();
            payload
        })
        .collect()
}

fn decode_all(dec: &mut dyn AudioDecoder, payloads: &[Vec<u8>]) -> Vec<i16> {
    let mut out = Vec::new();
    for p in payloads {
        dec.decode(p, &mut out).unwrap();
    }
    out
}

/// The delay (0..max_delay) at which `output` best matches `input`, by cross-correlation.
fn find_delay(input: &[i16], output: &[i16], max_delay: usize) -> usize {
    let span = input.len().min(output.len()) - max_delay;
    (0..max_delay)
        .max_by_key(|&d| {
            (0..span)
                .map(|i| i64::from(input[i]) * i64::from(output[i + d]))
                .sum::<i64>()
        })
        .unwrap()
}

/// SNR in dB of `test` against `reference`.
fn snr_db(reference: &[i16], test: &[i16]) -> f64 {
    assert_eq!(reference.len(), test.len());
    let (mut signal, mut noise) = (0.0, 0.0);
    for (&r, &t) in reference.iter().zip(test) {
        signal += f64::from(r).powi(2);
        noise += (f64::from(r) - f64::from(t)).powi(2);
    }
    10.0 * (signal / noise.max(1e-9)).log10()
}

/// SNR of a round trip with the output `delay` samples late, skipping `warmup` samples of
/// start-up.
fn round_trip_snr(input: &[i16], output: &[i16], delay: usize, warmup: usize) -> f64 {
    let n = input.len().min(output.len() - delay) - warmup;
    snr_db(
        &input[warmup..warmup + n],
        &output[warmup + delay..warmup + delay + n],
    )
}

/// Power of `freq` in `pcm` (Goertzel).
fn tone_power(pcm: &[i16], freq: f64, rate: u32) -> f64 {
    let k = 2.0 * (2.0 * PI * freq / f64::from(rate)).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &x in pcm {
        let s0 = f64::from(x) + k * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - k * s1 * s2) / (pcm.len() as f64).powi(2)
}

#[test]
fn g711_round_trip() {
    for (codec, pt) in [(Codec::Pcmu, 0), (Codec::Pcma, 8)] {
        let nc = negotiated(codec, pt, None);
        let mut enc = encoder_for(&nc, 20).unwrap();
        let mut dec = decoder_for(&nc).unwrap();
        assert_eq!(enc.codec(), codec);
        assert_eq!((enc.sample_rate(), dec.sample_rate()), (8000, 8000));
        assert_eq!(enc.frame_samples(), 160);
        let input = sine(1000.0, 8000, 8000, 12000.0);
        let payloads = encode_all(enc.as_mut(), &input);
        assert!(payloads.iter().all(|p| p.len() == 160));
        let output = decode_all(dec.as_mut(), &payloads);
        assert_eq!(measure_delay(&nc, 20, 40), 0);
        let snr = round_trip_snr(&input, &output, 0, 0);
        assert!(snr > 30.0, "{codec:?} SNR {snr:.1} dB");
    }
}

#[test]
fn g722_round_trip_keeps_a_1khz_sine() {
    for ptime in [10, 20, 30] {
        let nc = negotiated(Codec::G722, 9, None);
        let mut enc = encoder_for(&nc, ptime).unwrap();
        let mut dec = decoder_for(&nc).unwrap();
        assert_eq!((enc.sample_rate(), dec.sample_rate()), (16000, 16000));
        let frame = 16 * ptime as usize;
        assert_eq!(enc.frame_samples(), frame);
        let input = sine(1000.0, 16000, frame * 50, 10000.0);
        let payloads = encode_all(enc.as_mut(), &input);
        assert_eq!(payloads.len(), 50);
        // 64 kbit/s: one octet per two samples, 8 octets per ms.
        assert!(payloads.iter().all(|p| p.len() == 8 * ptime as usize));
        let output = decode_all(dec.as_mut(), &payloads);
        assert_eq!(output.len(), input.len());
        // A sine cannot tell delays a period apart, so the delay is measured on noise: the two
        // 24-tap QMFs delay the signal by 22 samples.
        let delay = measure_delay(&nc, ptime, 160);
        assert_eq!(delay, 22, "ptime {ptime}");
        let snr = round_trip_snr(&input, &output, delay, 320);
        assert!(snr > 20.0, "ptime {ptime}: SNR {snr:.1} dB");
    }
}

#[test]
fn g722_carries_the_upper_band() {
    let nc = negotiated(Codec::G722, 9, None);
    let mut enc = encoder_for(&nc, 20).unwrap();
    let mut dec = decoder_for(&nc).unwrap();
    let low = sine(500.0, 16000, 16000, 6000.0);
    let high = sine(6000.0, 16000, 16000, 3000.0);
    let input: Vec<i16> = low.iter().zip(&high).map(|(a, b)| a + b).collect();
    let output = decode_all(dec.as_mut(), &encode_all(enc.as_mut(), &input));
    // A 6 kHz tone lives in the 4-8 kHz sub-band, coded with 2 bits per sample.
    let (inp, outp) = (&input[3200..], &output[3200..]);
    for freq in [500.0, 6000.0] {
        let ratio_db =
            10.0 * (tone_power(outp, freq, 16000) / tone_power(inp, freq, 16000)).log10();
        assert!(
            ratio_db.abs() < 2.0,
            "{freq} Hz changed by {ratio_db:.1} dB"
        );
    }
    // And nothing at a frequency that was not there.
    assert!(tone_power(outp, 3000.0, 16000) < tone_power(outp, 6000.0, 16000) / 100.0);
}

#[test]
fn opus_round_trip_at_each_rate() {
    for rate in [8000u32, 16000, 24000, 48000] {
        let fmtp = format!("useinbandfec=1; maxplaybackrate={rate}; sprop-maxcapturerate={rate}");
        let nc = negotiated(Codec::Opus, 111, Some(&fmtp));
        let mut enc = encoder_for(&nc, 20).unwrap();
        let mut dec = decoder_for(&nc).unwrap();
        assert_eq!(enc.codec(), Codec::Opus);
        assert_eq!((enc.sample_rate(), dec.sample_rate()), (rate, rate));
        let frame = (rate / 50) as usize;
        assert_eq!(enc.frame_samples(), frame);
        let input = sine(1000.0, rate, frame * 50, 10000.0);
        let payloads = encode_all(enc.as_mut(), &input);
        assert!(payloads.iter().all(|p| !p.is_empty() && p.len() < 400));
        let output = decode_all(dec.as_mut(), &payloads);
        assert_eq!(output.len(), input.len());
        let coarse = measure_delay(&nc, 20, frame);
        // libopus's VoIP delay is 6.5 ms at every rate (2.5 ms framing + 4 ms lookahead).
        let nominal = rate as usize * 13 / 2000;
        assert!(coarse.abs_diff(nominal) <= 2, "{rate} Hz: delay {coarse}");
        // Refined on the sine itself, within less than half its period of the noise estimate.
        let delay = coarse - 3 + find_delay(&input[frame..], &output[frame + coarse - 3..], 7);
        let snr = round_trip_snr(&input, &output, delay, frame * 10);
        assert!(snr > 10.0, "{rate} Hz: SNR {snr:.1} dB");
    }
}

/// A signal whose pitch changes every 20 ms frame (continuous phase), so concealment, which
/// extrapolates the previous frame, cannot guess a lost frame, while FEC carries it.
fn stepped_tones(rate: u32, frames: usize) -> Vec<i16> {
    let frame = (rate / 50) as usize;
    let mut phase = 0.0f64;
    let mut out = Vec::with_capacity(frame * frames);
    for f in 0..frames {
        let freq = 300.0 + 170.0 * (f % 7) as f64;
        for _ in 0..frame {
            out.push((9000.0 * phase.sin()) as i16);
            phase += 2.0 * PI * freq / f64::from(rate);
        }
    }
    out
}

#[test]
fn opus_fec_recovers_a_lost_frame_better_than_concealment() {
    let rate = 16000;
    let frame = 320;
    let input = stepped_tones(rate, 60);
    let mut enc = OpusEncoder::new(rate, 20).unwrap();
    let payloads = encode_all(&mut enc, &input);

    let mut reference = OpusDecoder::new(rate).unwrap();
    let expected = decode_all(&mut reference, &payloads);

    for lost in [20usize, 33, 47] {
        let mut plc = OpusDecoder::new(rate).unwrap();
        let mut fec = OpusDecoder::new(rate).unwrap();
        let (mut plc_out, mut fec_out) = (Vec::new(), Vec::new());
        for p in &payloads[..lost] {
            plc.decode(p, &mut plc_out).unwrap();
            fec.decode(p, &mut fec_out).unwrap();
        }
        plc.conceal(frame, &mut plc_out).unwrap();
        assert!(
            fec.decode_fec(&payloads[lost + 1], frame, &mut fec_out)
                .unwrap()
        );
        assert_eq!(plc_out.len(), (lost + 1) * frame);
        assert_eq!(fec_out.len(), (lost + 1) * frame);

        let range = lost * frame..(lost + 1) * frame;
        let plc_snr = snr_db(&expected[range.clone()], &plc_out[range.clone()]);
        let fec_snr = snr_db(&expected[range.clone()], &fec_out[range]);
        assert!(
            fec_snr > plc_snr + 3.0 && fec_snr > 5.0,
            "frame {lost}: FEC {fec_snr:.1} dB, PLC {plc_snr:.1} dB"
        );

        // Decoding carries on normally after either kind of recovery.
        fec.decode(&payloads[lost + 1], &mut fec_out).unwrap();
        assert_eq!(fec_out.len(), (lost + 2) * frame);
    }
}

#[test]
fn opus_without_fec_data_reports_no_recovery() {
    let rate = 16000;
    let input = stepped_tones(rate, 10);
    let mut enc = OpusEncoder::new(rate, 20).unwrap();
    enc.set_inband_fec(false).unwrap();
    let payloads = encode_all(&mut enc, &input);
    let mut dec = OpusDecoder::new(rate).unwrap();
    let mut out = Vec::new();
    for p in &payloads[..5] {
        dec.decode(p, &mut out).unwrap();
    }
    assert!(!dec.decode_fec(&payloads[6], 320, &mut out).unwrap());
    assert_eq!(out.len(), 5 * 320);
    dec.conceal(320, &mut out).unwrap();
    assert_eq!(out.len(), 6 * 320);
}

#[test]
fn opus_frame_sizes_follow_ptime() {
    let nc = negotiated(Codec::Opus, 111, None);
    for (ptime, frame_ms) in [(10, 10), (20, 20), (30, 20), (40, 40), (60, 60)] {
        let mut enc = encoder_for(&nc, ptime).unwrap();
        assert_eq!(enc.sample_rate(), 48000);
        assert_eq!(enc.frame_samples(), 48 * frame_ms, "ptime {ptime}");
        let mut payload = Vec::new();
        enc.encode(&vec![0; 48 * frame_ms], &mut payload).unwrap();
        let mut dec = decoder_for(&nc).unwrap();
        let mut out = Vec::new();
        dec.decode(&payload, &mut out).unwrap();
        assert_eq!(out.len(), 48 * frame_ms);
    }
    let mut enc = encoder_for(&nc, 20).unwrap();
    assert_eq!(
        enc.encode(&[0; 100], &mut Vec::new()),
        Err(CodecError::FrameSize {
            expected: 960,
            got: 100
        })
    );
}

#[test]
fn opus_respects_maxaveragebitrate() {
    let input = stepped_tones(48000, 150);
    let bits = |fmtp: Option<&str>| -> usize {
        let nc = negotiated(Codec::Opus, 111, fmtp);
        let mut enc = encoder_for(&nc, 20).unwrap();
        encode_all(enc.as_mut(), &input)
            .iter()
            .map(Vec::len)
            .sum::<usize>()
            * 8
    };
    let unlimited = bits(None);
    let limited = bits(Some("maxaveragebitrate=12000"));
    // 150 frames of 20 ms = 3 s. VBR overshoots on this signal's many onsets, so allow 40 %.
    assert!(limited < 3 * 12000 * 14 / 10, "{} bit/s", limited / 3);
    assert!(limited * 2 < unlimited, "{limited} vs {unlimited} bits");
    let mut enc = OpusEncoder::new(48000, 20).unwrap();
    enc.limit_bitrate(12000).unwrap();
    assert_eq!(enc.bitrate().unwrap(), 12000);
    enc.limit_bitrate(64000).unwrap();
    assert_eq!(enc.bitrate().unwrap(), 12000);
}

#[test]
fn unusable_requests_are_errors() {
    let te = negotiated(Codec::TelephoneEvent, 101, Some("0-16"));
    assert_eq!(
        encoder_for(&te, 20).err(),
        Some(CodecError::NotAudio(Codec::TelephoneEvent))
    );
    assert_eq!(
        decoder_for(&te).err(),
        Some(CodecError::NotAudio(Codec::TelephoneEvent))
    );
    let pcmu = negotiated(Codec::Pcmu, 0, None);
    assert!(matches!(
        encoder_for(&pcmu, 0).err(),
        Some(CodecError::UnsupportedPtime { ptime_ms: 0, .. })
    ));
    assert!(encoder_for(&pcmu, 201).is_err());
    let opus = negotiated(Codec::Opus, 111, None);
    assert!(encoder_for(&opus, 5).is_err());
}

#[test]
fn waveform_codecs_conceal_with_the_last_pitch_period() {
    let nc = negotiated(Codec::Pcma, 8, None);
    let mut enc = encoder_for(&nc, 20).unwrap();
    let mut dec = decoder_for(&nc).unwrap();
    let input = sine(400.0, 8000, 1600, 10000.0);
    let payloads = encode_all(enc.as_mut(), &input);
    let mut out = Vec::new();
    for p in &payloads[..5] {
        dec.decode(p, &mut out).unwrap();
    }
    // 10 ms of concealment: the 400 Hz tone goes on (period 20 samples).
    dec.conceal(80, &mut out).unwrap();
    assert!(!dec.decode_fec(&payloads[6], 80, &mut out).unwrap());
    assert_eq!(out.len(), 880);
    let snr = snr_db(&input[800..880], &out[800..880]);
    assert!(snr > 20.0, "concealment SNR {snr:.1} dB");
}
