//! SIP INFO DTMF bodies: `application/dtmf-relay` and `application/dtmf` are parsed as real
//! peers send them (spacing, case, LF-only, missing Duration) and built for sending; garbage
//! is a typed error, never a panic.

use std::time::Instant;

use voxline::media::dtmf::info::{
    CONTENT_TYPE_DTMF, CONTENT_TYPE_DTMF_RELAY, DEFAULT_DURATION_MS, InfoDtmf, InfoError,
    InfoFormat, build_dtmf, build_dtmf_relay, parse_dtmf, parse_dtmf_relay, parse_info_body,
};
use voxline::media::dtmf::{Digit, DtmfMethod};

fn relay(body: &str) -> Result<InfoDtmf, InfoError> {
    parse_dtmf_relay(body.as_bytes())
}

fn ok(digit: Digit, duration_ms: u32) -> Result<InfoDtmf, InfoError> {
    Ok(InfoDtmf { digit, duration_ms })
}

#[test]
fn dtmf_relay_as_phones_send_it() {
    assert_eq!(relay("Signal=5\r\nDuration=160\r\n"), ok(Digit::D5, 160));
    assert_eq!(relay("Signal=5\r\nDuration=160"), ok(Digit::D5, 160));
    assert_eq!(relay("Signal=*\r\nDuration=250\r\n"), ok(Digit::Star, 250));
    assert_eq!(relay("Signal=#\r\nDuration=100\r\n"), ok(Digit::Hash, 100));
    assert_eq!(relay("Signal=A\r\nDuration=100\r\n"), ok(Digit::A, 100));
}

#[test]
fn dtmf_relay_tolerates_spaces_case_lf_and_order() {
    assert_eq!(
        relay("Signal= *\r\nDuration= 120\r\n"),
        ok(Digit::Star, 120)
    );
    assert_eq!(relay("  signal = 7 \n DURATION=90\n"), ok(Digit::D7, 90));
    assert_eq!(relay("Duration=300\nSignal=0\n"), ok(Digit::D0, 300));
    assert_eq!(relay("SIGNAL=d\r\n\r\nduration=80"), ok(Digit::D, 80));
    assert_eq!(
        relay("\tSignal\t=\t9\t\r\n"),
        ok(Digit::D9, DEFAULT_DURATION_MS)
    );
    // Unknown fields are ignored.
    assert_eq!(
        relay("Signal=3\r\nDuration=100\r\nVolume=10\r\n"),
        ok(Digit::D3, 100)
    );
}

#[test]
fn dtmf_relay_defaults_a_missing_duration_to_250ms() {
    assert_eq!(DEFAULT_DURATION_MS, 250);
    assert_eq!(relay("Signal=1\r\n"), ok(Digit::D1, 250));
    assert_eq!(relay("Signal=1"), ok(Digit::D1, 250));
    assert_eq!(relay("Signal=1\r\nDuration=\r\n"), ok(Digit::D1, 250));
}

#[test]
fn dtmf_relay_accepts_numeric_event_codes_for_star_hash_and_letters() {
    assert_eq!(relay("Signal=10\r\nDuration=100"), ok(Digit::Star, 100));
    assert_eq!(relay("Signal=11\r\nDuration=100"), ok(Digit::Hash, 100));
    assert_eq!(relay("Signal=15\r\nDuration=100"), ok(Digit::D, 100));
}

#[test]
fn dtmf_relay_garbage_is_a_typed_error() {
    assert_eq!(relay(""), Err(InfoError::Empty));
    assert_eq!(relay(" \r\n\r\n"), Err(InfoError::Empty));
    assert_eq!(relay("Duration=100\r\n"), Err(InfoError::MissingSignal));
    assert_eq!(relay("Signal=\r\n"), Err(InfoError::MissingSignal));
    assert_eq!(relay("Signal=X\r\n"), Err(InfoError::BadSignal("X".into())));
    assert_eq!(
        relay("Signal=55\r\n"),
        Err(InfoError::BadSignal("55".into()))
    );
    assert_eq!(
        relay("Signal=16\r\n"),
        Err(InfoError::BadSignal("16".into()))
    );
    assert_eq!(relay("Signal=!\r\n"), Err(InfoError::BadSignal("!".into())));
    assert_eq!(
        relay("Signal=5\r\nDuration=abc\r\n"),
        Err(InfoError::BadDuration("abc".into()))
    );
    assert_eq!(
        relay("Signal=5\r\nDuration=-5\r\n"),
        Err(InfoError::BadDuration("-5".into()))
    );
    assert_eq!(
        relay("Signal=5\r\nDuration=99999999999999\r\n"),
        Err(InfoError::BadDuration("99999999999999".into()))
    );
    assert_eq!(
        relay("hello world"),
        Err(InfoError::MalformedLine("hello world".into()))
    );
    assert_eq!(relay("=5\r\n"), Err(InfoError::MalformedLine("=5".into())));
    assert_eq!(
        relay("Signal=5\r\nSignal=6\r\n"),
        Err(InfoError::DuplicateField("Signal".into()))
    );
    assert_eq!(
        parse_dtmf_relay(&[b'S', 0xFF, 0xFE]),
        Err(InfoError::NotText)
    );
}

#[test]
fn application_dtmf_is_the_key_alone() {
    assert_eq!(parse_dtmf(b"5"), ok(Digit::D5, DEFAULT_DURATION_MS));
    assert_eq!(parse_dtmf(b" # \r\n"), ok(Digit::Hash, DEFAULT_DURATION_MS));
    assert_eq!(parse_dtmf(b"c"), ok(Digit::C, DEFAULT_DURATION_MS));
    assert_eq!(parse_dtmf(b""), Err(InfoError::Empty));
    assert_eq!(parse_dtmf(b"\r\n"), Err(InfoError::Empty));
    assert_eq!(parse_dtmf(b"Z"), Err(InfoError::BadSignal("Z".into())));
    assert_eq!(parse_dtmf(b"5 6"), Err(InfoError::BadSignal("5 6".into())));
    assert_eq!(parse_dtmf(&[0xC3, 0x28]), Err(InfoError::NotText));
}

#[test]
fn the_content_type_picks_the_format() {
    assert_eq!(
        InfoFormat::from_content_type("application/dtmf-relay"),
        Ok(InfoFormat::DtmfRelay)
    );
    assert_eq!(
        InfoFormat::from_content_type("Application/DTMF-Relay; charset=utf-8"),
        Ok(InfoFormat::DtmfRelay)
    );
    assert_eq!(
        InfoFormat::from_content_type(" application/dtmf "),
        Ok(InfoFormat::Dtmf)
    );
    assert_eq!(
        InfoFormat::from_content_type("application/sdp"),
        Err(InfoError::UnsupportedContentType("application/sdp".into()))
    );
    assert_eq!(
        parse_info_body("application/dtmf-relay", b"Signal=8\r\nDuration=200\r\n"),
        ok(Digit::D8, 200)
    );
    assert_eq!(
        parse_info_body("application/dtmf", b"8"),
        ok(Digit::D8, 250)
    );
    // The same body under the other type is an error, not a guess.
    assert_eq!(
        parse_info_body("application/dtmf", b"Signal=8"),
        Err(InfoError::BadSignal("Signal=8".into()))
    );
}

#[test]
fn bodies_are_built_for_sending_and_parse_back() {
    assert_eq!(
        build_dtmf_relay(Digit::D5, 160),
        "Signal=5\r\nDuration=160\r\n"
    );
    assert_eq!(build_dtmf(Digit::Star), "*");
    assert_eq!(
        InfoFormat::DtmfRelay.content_type(),
        CONTENT_TYPE_DTMF_RELAY
    );
    assert_eq!(InfoFormat::Dtmf.content_type(), CONTENT_TYPE_DTMF);
    for digit in Digit::ALL {
        let info = InfoDtmf {
            digit,
            duration_ms: 120,
        };
        for format in [InfoFormat::DtmfRelay, InfoFormat::Dtmf] {
            let body = info.to_body(format);
            let back = parse_info_body(format.content_type(), body.as_bytes()).expect("parses");
            assert_eq!(back.digit, digit);
            let expect = if format == InfoFormat::Dtmf { 250 } else { 120 };
            assert_eq!(back.duration_ms, expect);
        }
    }
}

#[test]
fn an_info_key_press_becomes_a_dtmf_digit() {
    let now = Instant::now();
    let d = relay("Signal=2\r\nDuration=180")
        .expect("parses")
        .to_dtmf_digit(now);
    assert_eq!(d.digit, Digit::D2);
    assert_eq!(d.method, DtmfMethod::SipInfo);
    assert_eq!(d.duration_ms, 180);
    assert_eq!(d.at, now);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic fuzz over short byte strings made of the interesting characters.
    let alphabet = b"Signal=Duration\r\n 0123456789*#ABCDxyz!-\xFF";
    let mut seed = 0x1234_5678_9ABC_DEF0u64;
    for _ in 0..20_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 40) as usize;
        let body: Vec<u8> = (0..len)
            .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
            .collect();
        let _ = parse_dtmf_relay(&body);
        let _ = parse_dtmf(&body);
    }
}
