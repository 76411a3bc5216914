//! In-band DTMF (ITU-T Q.23 tones, Q.24 receiver limits): the Goertzel detector accepts and
//! rejects at the Q.24 boundaries (frequency deviation, twist, level, duration, pause),
//! reports one event per key press, and never triggers on speech (talk-off).
//!
//! The tones are generated here; the speech comes from espeak-ng, resampled by sox. Both
//! programs are required: without them the talk-off tests fail with an install hint.

use std::time::{Duration, Instant};

use voxline::media::dtmf::inband::{DBM0_PEAK_AMPLITUDE, InbandConfig, InbandDetector};
use voxline::media::dtmf::{Digit, DtmfDigit, DtmfMethod};

const RATE: u32 = 8000;

/// A deterministic noise source (xorshift64*), uniform in [-1, 1).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (v as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

/// One DTMF tone's parameters.
#[derive(Clone, Copy)]
struct Tone {
    digit: Digit,
    ms: u32,
    row_dbm0: f64,
    col_dbm0: f64,
    /// Relative frequency deviations, e.g. 0.014 for +1.4%.
    row_dev: f64,
    col_dev: f64,
}

fn tone(digit: Digit, ms: u32) -> Tone {
    Tone {
        digit,
        ms,
        row_dbm0: -10.0,
        col_dbm0: -10.0,
        row_dev: 0.0,
        col_dev: 0.0,
    }
}

/// Builds a signal at `rate`.
struct Signal {
    rate: u32,
    samples: Vec<f64>,
    phase_seed: Noise,
}

impl Signal {
    fn new(rate: u32) -> Self {
        Self {
            rate,
            samples: Vec::new(),
            phase_seed: Noise(0x9E37_79B9_7F4A_7C15),
        }
    }

    fn silence_samples(mut self, n: usize) -> Self {
        self.samples.extend(std::iter::repeat_n(0.0, n));
        self
    }

    fn silence(self, ms: u32) -> Self {
        let n = (ms * self.rate / 1000) as usize;
        self.silence_samples(n)
    }

    fn tone(mut self, t: Tone) -> Self {
        let (fr, fc) = t.digit.frequencies_hz();
        let fr = f64::from(fr) * (1.0 + t.row_dev);
        let fc = f64::from(fc) * (1.0 + t.col_dev);
        let ar = DBM0_PEAK_AMPLITUDE * 10f64.powf(t.row_dbm0 / 20.0);
        let ac = DBM0_PEAK_AMPLITUDE * 10f64.powf(t.col_dbm0 / 20.0);
        let (pr, pc) = (
            self.phase_seed.next() * std::f64::consts::PI,
            self.phase_seed.next() * std::f64::consts::PI,
        );
        let n = (t.ms * self.rate / 1000) as usize;
        let fs = f64::from(self.rate);
        for i in 0..n {
            let x = i as f64 / fs;
            self.samples.push(
                ar * (2.0 * std::f64::consts::PI * fr * x + pr).sin()
                    + ac * (2.0 * std::f64::consts::PI * fc * x + pc).sin(),
            );
        }
        self
    }

    /// Adds white noise with this RMS level in dBm0 (a sine at 0 dBm0 has RMS peak/sqrt 2).
    fn noise(mut self, dbm0: f64, seed: u64) -> Self {
        let rms = DBM0_PEAK_AMPLITUDE / 2f64.sqrt() * 10f64.powf(dbm0 / 20.0);
        // Uniform in [-1, 1) has RMS 1/sqrt(3).
        let scale = rms * 3f64.sqrt();
        let mut noise = Noise(seed);
        for s in &mut self.samples {
            *s += scale * noise.next();
        }
        self
    }

    fn pcm(&self) -> Vec<i16> {
        self.samples
            .iter()
            .map(|s| s.round().clamp(-32768.0, 32767.0) as i16)
            .collect()
    }
}

fn detector(rate: u32) -> InbandDetector {
    InbandDetector::new(InbandConfig {
        sample_rate: rate,
        ..InbandConfig::default()
    })
    .expect("valid config")
}

/// Runs the detector over `pcm` in `chunk`-sample pieces (20 ms at 8 kHz by default),
/// dating the first sample `t0`, then flushes.
fn detect_chunked(pcm: &[i16], rate: u32, chunk: usize, t0: Instant) -> Vec<DtmfDigit> {
    let mut d = detector(rate);
    let mut out = Vec::new();
    for (i, c) in pcm.chunks(chunk).enumerate() {
        let now = t0 + Duration::from_secs_f64((i * chunk) as f64 / f64::from(rate));
        out.extend(d.process(now, c));
    }
    out.extend(d.flush());
    out
}

fn detect(signal: &Signal) -> Vec<DtmfDigit> {
    let chunk = (signal.rate / 50) as usize;
    detect_chunked(&signal.pcm(), signal.rate, chunk, Instant::now())
}

fn keys(found: &[DtmfDigit]) -> String {
    found.iter().map(|d| d.digit.as_char()).collect()
}

#[test]
fn every_key_is_detected_once_with_its_duration() {
    for digit in Digit::ALL {
        let s = Signal::new(RATE)
            .silence(100)
            .tone(tone(digit, 80))
            .silence(100);
        let found = detect(&s);
        assert_eq!(keys(&found), digit.to_string(), "key {digit}");
        assert_eq!(found[0].method, DtmfMethod::InBand);
        let ms = found[0].duration_ms;
        assert!((72..=90).contains(&ms), "key {digit}: duration {ms} ms");
    }
}

#[test]
fn the_reported_instant_is_the_tone_start() {
    let t0 = Instant::now();
    let s = Signal::new(RATE)
        .silence(500)
        .tone(tone(Digit::D7, 100))
        .silence(200)
        .tone(tone(Digit::D8, 100))
        .silence(200);
    let found = detect_chunked(&s.pcm(), RATE, 160, t0);
    assert_eq!(keys(&found), "78");
    for (d, start_ms) in found.iter().zip([500i64, 800]) {
        let at_ms = d.at.duration_since(t0).as_secs_f64() * 1000.0;
        assert!(
            (at_ms - start_ms as f64).abs() <= 7.0,
            "{d:?} at {at_ms} ms"
        );
        assert!((93..=107).contains(&d.duration_ms), "{d:?}");
    }
}

#[test]
fn q24_minimum_timing_40ms_tones_40ms_pauses_at_any_alignment() {
    let all = "0123456789*#ABCD";
    for offset in [0, 7, 13, 26, 39, 50] {
        let mut s = Signal::new(RATE).silence_samples(offset).silence(60);
        for d in Digit::ALL {
            s = s.tone(tone(d, 40)).silence(40);
        }
        let s = s.silence(100);
        assert_eq!(keys(&detect(&s)), all, "offset {offset}");
    }
}

#[test]
fn the_same_key_twice_after_a_40ms_pause_is_two_presses() {
    for offset in [0, 17, 34] {
        let s = Signal::new(RATE)
            .silence_samples(offset)
            .silence(50)
            .tone(tone(Digit::D5, 60))
            .silence(40)
            .tone(tone(Digit::D5, 60))
            .silence(100);
        assert_eq!(keys(&detect(&s)), "55", "offset {offset}");
    }
}

#[test]
fn tones_of_23ms_or_less_are_rejected() {
    for ms in [10, 20, 23] {
        for offset in [0, 5, 13, 25, 38, 47] {
            let mut s = Signal::new(RATE).silence_samples(offset).silence(50);
            for d in Digit::ALL {
                s = s.tone(tone(d, ms)).silence(60);
            }
            let found = detect(&s.silence(100));
            assert!(found.is_empty(), "{ms} ms at {offset}: {found:?}");
        }
    }
}

#[test]
fn a_10ms_dropout_does_not_split_a_key_press() {
    for offset in [0, 9, 25, 40] {
        let s = Signal::new(RATE)
            .silence_samples(offset)
            .silence(50)
            .tone(tone(Digit::D9, 60))
            .silence(10)
            .tone(tone(Digit::D9, 60))
            .silence(100);
        let found = detect(&s);
        assert_eq!(keys(&found), "9", "offset {offset}");
        assert!((120..=140).contains(&found[0].duration_ms), "{found:?}");
    }
}

#[test]
fn back_to_back_keys_without_pause_are_both_reported() {
    let s = Signal::new(RATE)
        .silence(50)
        .tone(tone(Digit::D1, 100))
        .tone(tone(Digit::D2, 100))
        .silence(100);
    assert_eq!(keys(&detect(&s)), "12");
}

#[test]
fn frequency_deviation_of_1_4_percent_is_accepted() {
    for digit in Digit::ALL {
        for (dr, dc) in [
            (0.014, 0.014),
            (-0.014, -0.014),
            (0.014, -0.014),
            (-0.014, 0.014),
        ] {
            let t = Tone {
                row_dev: dr,
                col_dev: dc,
                ..tone(digit, 60)
            };
            let found = detect(&Signal::new(RATE).silence(50).tone(t).silence(100));
            assert_eq!(keys(&found), digit.to_string(), "{digit} {dr} {dc}");
        }
    }
}

#[test]
fn frequency_deviation_of_3_6_percent_is_rejected() {
    for digit in Digit::ALL {
        for (dr, dc) in [(0.036, 0.0), (-0.036, 0.0), (0.0, 0.036), (0.0, -0.036)] {
            let t = Tone {
                row_dev: dr,
                col_dev: dc,
                ..tone(digit, 100)
            };
            let found = detect(&Signal::new(RATE).silence(50).tone(t).silence(100));
            assert!(found.is_empty(), "{digit} {dr} {dc}: {found:?}");
        }
    }
}

/// A key with the low-group (row) tone `row_minus_col_db` stronger than the high-group one;
/// the stronger tone is at -6 dBm0.
fn twisted(digit: Digit, row_minus_col_db: f64) -> Signal {
    let (row, col) = if row_minus_col_db >= 0.0 {
        (-6.0, -6.0 - row_minus_col_db)
    } else {
        (-6.0 + row_minus_col_db, -6.0)
    };
    let t = Tone {
        row_dbm0: row,
        col_dbm0: col,
        ..tone(digit, 80)
    };
    Signal::new(RATE).silence(50).tone(t).silence(100)
}

#[test]
fn normal_twist_7db_accepted_9db_rejected() {
    for digit in Digit::ALL {
        assert_eq!(keys(&detect(&twisted(digit, 7.0))), digit.to_string());
        assert_eq!(keys(&detect(&twisted(digit, 9.0))), "", "{digit}");
    }
}

#[test]
fn reverse_twist_3db_accepted_5db_rejected() {
    for digit in Digit::ALL {
        assert_eq!(keys(&detect(&twisted(digit, -3.0))), digit.to_string());
        assert_eq!(keys(&detect(&twisted(digit, -5.0))), "", "{digit}");
    }
}

#[test]
fn minimum_level() {
    for digit in [Digit::D1, Digit::D0, Digit::D] {
        let at = |dbm0: f64| {
            let t = Tone {
                row_dbm0: dbm0,
                col_dbm0: dbm0,
                ..tone(digit, 80)
            };
            keys(&detect(&Signal::new(RATE).silence(50).tone(t).silence(100)))
        };
        assert_eq!(at(-25.0), digit.to_string(), "-25 dBm0");
        assert_eq!(at(0.0), digit.to_string(), "0 dBm0");
        assert_eq!(at(-35.0), "", "-35 dBm0");
        assert_eq!(at(-45.0), "", "-45 dBm0");
    }
}

#[test]
fn tones_in_noise_are_found_and_noise_alone_is_not() {
    let mut s = Signal::new(RATE).silence(100);
    for d in Digit::ALL {
        let t = Tone {
            row_dbm0: -15.0,
            col_dbm0: -15.0,
            ..tone(d, 60)
        };
        s = s.tone(t).silence(60);
    }
    // 20 dB below each tone.
    let s = s.silence(100).noise(-35.0, 42);
    assert_eq!(keys(&detect(&s)), "0123456789*#ABCD");
    let loud_noise = Signal::new(RATE).silence(3000).noise(-10.0, 7);
    assert_eq!(keys(&detect(&loud_noise)), "");
}

/// G.711 mu-law encode then decode (ITU-T G.711), as a telephone line does to the audio.
fn mulaw_round_trip(pcm: &[i16]) -> Vec<i16> {
    const BIAS: i32 = 0x84;
    pcm.iter()
        .map(|&s| {
            let sign = if s < 0 { 0x80 } else { 0 };
            let x = (i32::from(s).abs().min(32635)) + BIAS;
            let mut exponent = 7;
            while exponent > 0 && x & (0x80 << exponent) == 0 {
                exponent -= 1;
            }
            let mantissa = (x >> (exponent + 3)) & 0x0F;
            let code = !(sign | (exponent << 4) | mantissa) as u8;
            // Decode.
            let u = !code;
            let e = i32::from((u >> 4) & 7);
            let m = i32::from(u & 0x0F);
            let v = (((m << 3) + BIAS) << e) - BIAS;
            (if u & 0x80 != 0 { -v } else { v }) as i16
        })
        .collect()
}

#[test]
fn keys_survive_mulaw_at_low_and_high_level() {
    for dbm0 in [-25.0, -3.0] {
        let mut s = Signal::new(RATE).silence(60);
        for d in Digit::ALL {
            let t = Tone {
                row_dbm0: dbm0,
                col_dbm0: dbm0,
                ..tone(d, 50)
            };
            s = s.tone(t).silence(50);
        }
        let pcm = mulaw_round_trip(&s.silence(100).pcm());
        let found = detect_chunked(&pcm, RATE, 160, Instant::now());
        assert_eq!(keys(&found), "0123456789*#ABCD", "{dbm0} dBm0");
    }
    // Sanity of the codec: a full-scale sample survives within mu-law precision.
    assert!((i32::from(mulaw_round_trip(&[20_000])[0]) - 20_000).abs() < 600);
}

#[test]
fn chunk_size_does_not_change_the_result() {
    let mut s = Signal::new(RATE).silence(30);
    for d in [Digit::D3, Digit::Hash, Digit::D3, Digit::B] {
        s = s.tone(tone(d, 70)).silence(50);
    }
    let pcm = s.silence(80).pcm();
    let t0 = Instant::now();
    let reference = detect_chunked(&pcm, RATE, 160, t0);
    assert_eq!(keys(&reference), "3#3B");
    for chunk in [1, 7, 51, 102, 333, pcm.len()] {
        let found = detect_chunked(&pcm, RATE, chunk, t0);
        assert_eq!(keys(&found), "3#3B", "chunk {chunk}");
        for (a, b) in found.iter().zip(&reference) {
            assert_eq!(a.duration_ms, b.duration_ms, "chunk {chunk}");
            let skew = if a.at > b.at {
                a.at - b.at
            } else {
                b.at - a.at
            };
            assert!(skew < Duration::from_millis(1), "chunk {chunk}");
        }
    }
}

#[test]
fn works_at_16_khz() {
    for offset in [0, 30, 77] {
        let mut s = Signal::new(16_000).silence_samples(offset).silence(50);
        for d in Digit::ALL {
            s = s.tone(tone(d, 45)).silence(45);
        }
        assert_eq!(keys(&detect(&s.silence(100))), "0123456789*#ABCD");
        let off = Tone {
            col_dev: 0.036,
            ..tone(Digit::D6, 100)
        };
        let s = Signal::new(16_000).silence(50).tone(off).silence(100);
        assert_eq!(keys(&detect(&s)), "");
    }
}

// ---- Talk-off: speech must never be taken for DTMF. ----

/// Speaks `text` with espeak-ng in `voice`, as 8 kHz 16-bit telephone-band audio normalised
/// to -1 dBFS peaks (as loud as a line gets).
fn speak(voice: &str, text: &str) -> Vec<i16> {
    crate::signals::speak_at(voice, text, 160, -1).unwrap_or_else(|e| {
        panic!("speech for the talk-off test: {e} (apt-get install -y espeak-ng sox)")
    })
}

const ENGLISH: &[&str] = &[
    "Hello, thank you for calling. How can I help you today?",
    "My phone number is five five five, one two three four, extension nine eight seven.",
    "One two three four five six seven eight nine zero. Star. Pound. Hash.",
    "Please hold the line while I transfer you to the billing department.",
    "The quick brown fox jumps over the lazy dog, again and again and again.",
    "Oh! Wow! Really? Yes, yes, yes. No. Mmmm. Aaaaah. Eeeeee. Ooooooh.",
    "She sells sea shells by the sea shore; Peter Piper picked a peck of pickled peppers.",
    "Your account balance is one thousand two hundred and thirty four dollars and fifty six cents.",
    "Beep. Boop. Ding dong. La la la la la. Tra la la. Hmmmmmm.",
    "Twenty one, forty two, sixty three, eighty four, ninety nine, one hundred.",
];

fn assert_no_talk_off(voice: &str, texts: &[&str]) -> f64 {
    let mut seconds = 0.0;
    for text in texts {
        let pcm = speak(voice, text);
        seconds += pcm.len() as f64 / f64::from(RATE);
        let found = detect_chunked(&pcm, RATE, 160, Instant::now());
        assert!(
            found.is_empty(),
            "talk-off: voice {voice} \"{text}\" gave {found:?}"
        );
    }
    seconds
}

#[test]
fn talk_off_english_voices() {
    let mut seconds = 0.0;
    for voice in ["en", "en-us", "en+f3", "en+m3", "en-us+f2", "en+f5"] {
        seconds += assert_no_talk_off(voice, ENGLISH);
    }
    assert!(seconds > 120.0, "only {seconds} s of speech");
}

#[test]
fn talk_off_other_languages() {
    let texts: &[(&str, &[&str])] = &[
        (
            "de",
            &[
                "Guten Tag, vielen Dank fuer Ihren Anruf. Wie kann ich Ihnen helfen?",
                "Meine Nummer ist null eins sieben neun, vier fuenf sechs, zwei drei acht.",
                "Bitte bleiben Sie in der Leitung, Sie werden gleich verbunden.",
            ],
        ),
        (
            "fr",
            &[
                "Bonjour, merci de votre appel. Comment puis-je vous aider?",
                "Mon numero est zero six, douze, trente quatre, cinquante six, soixante dix huit.",
                "Veuillez patienter, un conseiller va prendre votre appel.",
            ],
        ),
        (
            "es",
            &[
                "Hola, gracias por llamar. En que puedo ayudarle?",
                "Mi numero es seis uno dos, tres cuatro cinco, siete ocho nueve cero.",
            ],
        ),
        (
            "it",
            &[
                "Buongiorno, grazie per aver chiamato. Come posso aiutarla?",
                "Il mio numero e tre tre tre, uno due tre, quattro cinque sei sette.",
            ],
        ),
    ];
    let mut seconds = 0.0;
    for (lang, lines) in texts {
        for variant in ["", "+f3"] {
            seconds += assert_no_talk_off(&format!("{lang}{variant}"), lines);
        }
    }
    assert!(seconds > 60.0, "only {seconds} s of speech");
}

#[test]
fn a_key_over_background_speech_is_still_found() {
    let speech = speak(
        "en",
        "Hello, thank you for calling, how can I help you today?",
    );
    let mut s = Signal::new(RATE).silence(600);
    s = s.tone(tone(Digit::D4, 120)).silence(500);
    let mut pcm = s.samples;
    // Speech 20 dB below its normalised peak level, under the key.
    for (x, v) in pcm.iter_mut().zip(&speech) {
        *x += f64::from(*v) * 0.1;
    }
    let pcm: Vec<i16> = pcm
        .iter()
        .map(|s| s.round().clamp(-32768.0, 32767.0) as i16)
        .collect();
    assert_eq!(keys(&detect_chunked(&pcm, RATE, 160, Instant::now())), "4");
}

// ---- A peer sending the same key presses in band and as RFC 4733 events. ----

#[test]
fn the_detector_facade_reports_each_press_once_across_methods() {
    use voxline::media::dtmf::rfc4733::{Rfc4733Sender, Rfc4733SenderConfig};
    use voxline::media::dtmf::{DtmfDetector, DtmfDetectorConfig};

    let mut det = DtmfDetector::new(DtmfDetectorConfig::default()).expect("config");
    let mut tx = Rfc4733Sender::new(Rfc4733SenderConfig::default()).expect("config");
    let t0 = Instant::now();
    // "1", "1", "2" (100 ms each, 100 ms apart), sent as events and as audio, in step.
    let presses = [(Digit::D1, 100u64), (Digit::D1, 300), (Digit::D2, 500)];
    let mut s = Signal::new(RATE).silence(100);
    for (d, _) in presses {
        s = s.tone(tone(d, 100)).silence(100);
    }
    let pcm = s.silence(400).pcm();
    for (d, start) in presses {
        tx.send(t0 + ms(start), d, ms(100)).expect("send");
    }
    let mut got = Vec::new();
    // 20 ms ticks: audio packet, then the events due by then, then timeouts.
    for (i, chunk) in pcm.chunks(160).enumerate() {
        let now = t0 + ms(20 * i as u64);
        got.extend(det.handle_audio(now, chunk));
        let tick_end = now + ms(20);
        while let Some(p) = tx.poll(tick_end) {
            let ts = (p.event_start.duration_since(t0).as_millis() as u32) * 8;
            got.extend(
                det.handle_rtp_event(tick_end, ts, p.marker, &p.payload)
                    .expect("valid"),
            );
        }
        if let Some(deadline) = det.poll_timeout().filter(|d| *d <= tick_end) {
            got.extend(det.handle_timeout(deadline));
        }
    }
    // An INFO copy of the last press, arriving late through a proxy.
    let late = t0 + ms(900);
    let info = det
        .handle_info(
            late,
            "application/dtmf-relay",
            b"Signal=2\r\nDuration=100\r\n",
        )
        .expect("valid body");
    assert_eq!(info, None, "INFO copy of the last press is dropped");
    assert_eq!(keys(&got), "112", "{got:?}");
    // The RFC 4733 report arrives first for each press (on its end packet, before the
    // in-band detector has seen the 30 ms pause).
    assert!(
        got.iter().all(|d| d.method == DtmfMethod::Rfc4733),
        "{got:?}"
    );
    // A genuinely new INFO press is reported.
    let new = det
        .handle_info(t0 + ms(3000), "application/dtmf", b"9")
        .expect("valid body");
    assert_eq!(
        new.map(|d| (d.digit, d.method)),
        Some((Digit::D9, DtmfMethod::SipInfo))
    );
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn a_tone_cut_off_by_the_end_of_the_audio_is_reported_by_end_audio() {
    use voxline::media::dtmf::{DtmfDetector, DtmfDetectorConfig};

    let mut det = DtmfDetector::new(DtmfDetectorConfig::default()).expect("config");
    let pcm = Signal::new(RATE)
        .silence(100)
        .tone(tone(Digit::Star, 200))
        .pcm();
    let t0 = Instant::now();
    let mut got = Vec::new();
    for (i, chunk) in pcm.chunks(160).enumerate() {
        got.extend(det.handle_audio(t0 + ms(20 * i as u64), chunk));
    }
    assert_eq!(keys(&got), "", "still under way");
    let last = det.end_audio().expect("reported at the end of the audio");
    assert_eq!(last.digit, Digit::Star);
    assert!((190..=210).contains(&last.duration_ms), "{last:?}");
    assert_eq!(det.end_audio(), None);
}

/// voxline's own in-band sender (`media::dtmf::tone`) at every rate its codecs use: each of
/// the 16 keys, 100 ms with the sender's gap, written frame by frame, is read back once, in
/// order, with its duration (±10 ms), at levels and twist inside Q.24 limits.
#[test]
fn the_tone_sender_is_read_back_by_a_q24_receiver() {
    use voxline::media::dtmf::tone::ToneSender;
    for rate in [8000u32, 16000, 48000] {
        let mut sender = ToneSender::new(rate).expect("rate");
        for d in Digit::ALL {
            sender.send(d, Duration::from_millis(100)).expect("queued");
        }
        let frame = (rate / 50) as usize;
        let mut pcm = Vec::new();
        let mut buf = vec![0i16; frame];
        while sender.fill(&mut buf) {
            pcm.extend_from_slice(&buf);
        }
        let found = detect_chunked(&pcm, rate, frame, Instant::now());
        let expected: String = Digit::ALL.iter().map(|d| d.as_char()).collect();
        assert_eq!(keys(&found), expected, "at {rate} Hz");
        for d in &found {
            assert!(
                (90..=110).contains(&d.duration_ms),
                "{} lasted {} ms at {rate} Hz",
                d.digit,
                d.duration_ms
            );
        }
        // Idle: a frame is left untouched.
        let mut untouched = vec![7i16; frame];
        assert!(!sender.fill(&mut untouched));
        assert!(untouched.iter().all(|&s| s == 7));
    }
}
