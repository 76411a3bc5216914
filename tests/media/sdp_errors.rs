//! SDP errors: unusable offers and answers become `SdpError` values with the right SIP status
//! (400 for missing or malformed bodies, 488 for offers we cannot accept), never panics.

use voxline::sdp::{Codec, CodecPrefs, Direction, LocalMedia, SdpError, SdpSession};

/// Turns an indented multi-line literal into SDP text with CRLF line endings.
fn sdp(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn local() -> LocalMedia {
    LocalMedia {
        address: "192.0.2.10".parse().expect("ip"),
        rtp_port: 40000,
        ptime_ms: 20,
        rtcp_mux: true,
        codecs: CodecPrefs::default(),
        telephone_event: true,
        direction: Direction::SendRecv,
        srtp: None,
    }
}

fn answer_err(offer: &[u8]) -> SdpError {
    answer_err_with(offer, &local())
}

fn answer_err_with(offer: &[u8], local: &LocalMedia) -> SdpError {
    match SdpSession::new(1).answer(offer, local) {
        Ok((body, _)) => panic!(
            "expected an error, got an answer:\n{}",
            String::from_utf8_lossy(&body)
        ),
        Err(e) => e,
    }
}

fn offer_with_media(media: &str) -> String {
    sdp(&format!(
        "
        v=0
        o=- 3344 3344 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        {media}
        "
    ))
}

#[test]
fn empty_body_is_400_missing() {
    for body in [&b""[..], b"\r\n", b"   \n"] {
        let e = answer_err(body);
        assert_eq!(e, SdpError::Missing);
        assert_eq!(e.status_code(), 400);
        assert_eq!(e.reason_phrase(), "Bad Request - missing SDP");
    }
}

#[test]
fn garbage_is_400_malformed() {
    for body in [
        &b"hello world"[..],
        b"<html><body>not sdp</body></html>",
        b"\x00\xff\xfe\x01binary",
        b"o=- 1 1 IN IP4 198.51.100.1\r\nm=audio 7000 RTP/AVP 0\r\n", // no v= line
        b"v=1\r\nm=audio 7000 RTP/AVP 0\r\n",                         // wrong version
    ] {
        let e = answer_err(body);
        assert!(
            matches!(e, SdpError::Malformed(_)),
            "{:?} -> {e:?}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(e.status_code(), 400);
        assert_eq!(e.reason_phrase(), "Bad Request - malformed SDP");
    }
}

#[test]
fn truncated_m_line_is_400() {
    let full = offer_with_media("m=audio 7000 RTP/AVP 0");
    let cut = &full[..full.find("RTP/AVP").expect("m= line") + 3];
    let e = answer_err(cut.as_bytes());
    assert!(matches!(e, SdpError::Malformed(_)), "{e:?}");
    assert_eq!(e.status_code(), 400);
}

#[test]
fn truncated_before_media_is_488_no_audio() {
    let full = offer_with_media("m=audio 7000 RTP/AVP 0");
    let cut = &full[..full.find("m=").expect("m= line")];
    let e = answer_err(cut.as_bytes());
    assert_eq!(e, SdpError::NoAudio);
    assert_eq!(e.status_code(), 488);
    assert_eq!(e.reason_phrase(), "Not Acceptable Here - no audio stream");
}

#[test]
fn missing_connection_line_is_400() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        t=0 0
        m=audio 7000 RTP/AVP 0
    ");
    let e = answer_err(offer.as_bytes());
    assert!(
        matches!(e, SdpError::Malformed(ref m) if m.contains("c=")),
        "{e:?}"
    );
    assert_eq!(e.status_code(), 400);
}

#[test]
fn out_of_range_payload_type_is_400() {
    let e = answer_err(offer_with_media("m=audio 7000 RTP/AVP 0 300").as_bytes());
    assert!(matches!(e, SdpError::Malformed(_)), "{e:?}");
    assert_eq!(e.status_code(), 400);
}

#[test]
fn only_unknown_codecs_is_488_no_common_codec() {
    let offer = offer_with_media(
        "m=audio 7000 RTP/AVP 18 3 97 101
        a=rtpmap:18 G729/8000
        a=fmtp:18 annexb=no
        a=rtpmap:97 iLBC/8000
        a=rtpmap:101 telephone-event/8000",
    );
    let e = answer_err(offer.as_bytes());
    assert_eq!(
        e,
        SdpError::NoCommonCodec {
            offered: "G729/8000, GSM/8000, iLBC/8000, telephone-event/8000".to_owned()
        }
    );
    assert_eq!(e.status_code(), 488);
    assert_eq!(e.reason_phrase(), "Not Acceptable Here - no common codec");
}

#[test]
fn telephone_event_alone_is_not_a_codec() {
    let offer = offer_with_media(
        "m=audio 7000 RTP/AVP 101
        a=rtpmap:101 telephone-event/8000",
    );
    let e = answer_err(offer.as_bytes());
    assert!(matches!(e, SdpError::NoCommonCodec { .. }), "{e:?}");
    assert_eq!(e.status_code(), 488);
}

#[test]
fn codec_known_but_not_enabled_locally_is_488() {
    let offer = offer_with_media(
        "m=audio 7000 RTP/AVP 96
        a=rtpmap:96 opus/48000/2",
    );
    let mut l = local();
    l.codecs = CodecPrefs::new([Codec::Pcmu, Codec::Pcma]).expect("prefs");
    let e = answer_err_with(offer.as_bytes(), &l);
    assert_eq!(
        e,
        SdpError::NoCommonCodec {
            offered: "opus/48000/2".to_owned()
        }
    );
    assert_eq!(e.status_code(), 488);
}

#[test]
fn opus_with_wrong_clock_rate_is_not_opus() {
    let offer = offer_with_media(
        "m=audio 7000 RTP/AVP 96
        a=rtpmap:96 opus/16000",
    );
    let e = answer_err(offer.as_bytes());
    assert!(matches!(e, SdpError::NoCommonCodec { .. }), "{e:?}");
}

#[test]
fn video_only_is_488_no_audio() {
    let offer = offer_with_media(
        "m=video 7002 RTP/AVP 96
        a=rtpmap:96 H264/90000",
    );
    let e = answer_err(offer.as_bytes());
    assert_eq!(e, SdpError::NoAudio);
    assert_eq!(e.status_code(), 488);
}

#[test]
fn only_disabled_audio_is_488_no_audio() {
    let offer = offer_with_media(
        "m=audio 0 RTP/AVP 0
        m=video 7002 RTP/AVP 31",
    );
    let e = answer_err(offer.as_bytes());
    assert_eq!(e, SdpError::NoAudio);
    assert_eq!(e.status_code(), 488);
}

#[test]
fn srtp_only_with_srtp_off_is_488() {
    let offer = offer_with_media(
        "m=audio 7000 RTP/SAVP 0
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    );
    let e = answer_err(offer.as_bytes());
    assert_eq!(e, SdpError::SrtpOff);
    assert_eq!(e.status_code(), 488);
    assert_eq!(e.reason_phrase(), "Not Acceptable Here - SRTP not enabled");
}

#[test]
fn an_unknown_transport_is_488_unsupported_transport() {
    let offer = offer_with_media("m=audio 7000 UDP/TLS/RTP/SAVPF 0");
    let e = answer_err(offer.as_bytes());
    assert_eq!(
        e,
        SdpError::UnsupportedTransport {
            proto: "UDP/TLS/RTP/SAVPF".to_owned()
        }
    );
    assert_eq!(e.status_code(), 488);
    assert_eq!(
        e.reason_phrase(),
        "Not Acceptable Here - unsupported media transport"
    );
}

#[test]
fn hostname_connection_address_is_488() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 pbx.example.com
        t=0 0
        m=audio 7000 RTP/AVP 0
    ");
    let e = answer_err(offer.as_bytes());
    assert_eq!(
        e,
        SdpError::UnsupportedAddress {
            address: "IN IP4 pbx.example.com".to_owned()
        }
    );
    assert_eq!(e.status_code(), 488);
}

#[test]
fn failed_answer_does_not_touch_the_session_version() {
    let mut session = SdpSession::with_version(9, 100);
    let l = local();
    let good = offer_with_media("m=audio 7000 RTP/AVP 0");
    let (first, _) = session.answer(good.as_bytes(), &l).expect("good offer");
    assert!(String::from_utf8_lossy(&first).contains("o=voxline 9 100 "));

    let e = session.answer(b"garbage", &l).expect_err("garbage");
    assert_eq!(e.status_code(), 400);
    let e = session
        .answer(offer_with_media("m=video 7002 RTP/AVP 31").as_bytes(), &l)
        .expect_err("video only");
    assert_eq!(e.status_code(), 488);
    assert_eq!(session.version(), 100);

    let (again, _) = session.answer(good.as_bytes(), &l).expect("good offer");
    assert_eq!(again, first);
}

#[test]
fn accept_answer_without_offer_is_500() {
    let e = SdpSession::new(1)
        .accept_answer(offer_with_media("m=audio 7000 RTP/AVP 0").as_bytes())
        .expect_err("no offer was made");
    assert_eq!(e, SdpError::NoPendingOffer);
    assert_eq!(e.status_code(), 500);
}

#[test]
fn accept_answer_errors() {
    let mut session = SdpSession::new(1);
    let mut l = local();
    l.codecs = CodecPrefs::new([Codec::Pcmu]).expect("prefs");
    session.create_offer(&l);

    let e = session.accept_answer(b"").expect_err("empty");
    assert_eq!(e.status_code(), 400);

    let e = session
        .accept_answer(b"v=0\r\nm=audio")
        .expect_err("truncated");
    assert!(matches!(e, SdpError::Malformed(_)), "{e:?}");

    let rejected = offer_with_media("m=audio 0 RTP/AVP 0");
    let e = session
        .accept_answer(rejected.as_bytes())
        .expect_err("rejected");
    assert_eq!(e, SdpError::NoAudio);
    assert_eq!(e.status_code(), 488);

    // The answer picks a codec we did not offer.
    let wrong = offer_with_media("m=audio 7000 RTP/AVP 8");
    let e = session
        .accept_answer(wrong.as_bytes())
        .expect_err("PCMA not offered");
    assert_eq!(
        e,
        SdpError::NoCommonCodec {
            offered: "PCMA/8000".to_owned()
        }
    );

    // A correct answer still works afterwards.
    let good = offer_with_media("m=audio 7000 RTP/AVP 0");
    let media = session.accept_answer(good.as_bytes()).expect("good answer");
    assert_eq!(media.codec.codec, Codec::Pcmu);
}

#[test]
fn answering_drops_our_pending_offer() {
    let mut session = SdpSession::new(1);
    let l = local();
    session.create_offer(&l);
    let offer = offer_with_media("m=audio 7000 RTP/AVP 0");
    session.answer(offer.as_bytes(), &l).expect("answered");
    assert_eq!(
        session.accept_answer(offer.as_bytes()),
        Err(SdpError::NoPendingOffer)
    );
}
