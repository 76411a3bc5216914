//! SRTP in offer/answer (RFC 4568 SDES over RFC 3264): what each `srtp` mode offers, how
//! offers from SRTP trunks (RTP/SAVP), best-effort offers (keys on RTP/AVP) and plain ones
//! are answered, which are refused with 488, and how an answer to our offer is read. The keys
//! of a full round trip cross over: what one side protects with, the other unprotects with.

use voxline::sdp::{
    Codec, CryptoAttribute, CryptoError, LocalMedia, LocalSrtp, MasterKey, NegotiatedMedia,
    SdpError, SdpSession, SrtpMode, SrtpSuite, SrtpSuites,
};

const THEIR_KEY: &str = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";

fn our_key() -> MasterKey {
    MasterKey::new([7; 16], [9; 14])
}

fn local(mode: SrtpMode) -> LocalMedia {
    let mut l = LocalMedia::new("192.0.2.10".parse().expect("ip"), 40000);
    l.srtp = Some(LocalSrtp {
        mode,
        suites: SrtpSuites::default(),
        key: our_key(),
    });
    l
}

fn offer(proto: &str, crypto: &[&str]) -> String {
    let mut s = format!(
        "v=0\r\no=- 1 1 IN IP4 198.51.100.1\r\ns=-\r\nc=IN IP4 198.51.100.1\r\nt=0 0\r\n\
         m=audio 7000 {proto} 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    );
    for c in crypto {
        s.push_str(&format!("a=crypto:{c}\r\n"));
    }
    s
}

fn answer(offer: &str, mode: SrtpMode) -> Result<(String, NegotiatedMedia), SdpError> {
    SdpSession::new(5)
        .answer(offer.as_bytes(), &local(mode))
        .map(|(body, m)| (String::from_utf8(body).expect("utf-8"), m))
}

fn lines<'a>(sdp: &'a str, prefix: &str) -> Vec<&'a str> {
    sdp.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn an_srtp_trunk_offer_is_answered_with_its_tag_and_suite_and_our_key() {
    let o = offer(
        "RTP/SAVP",
        &[
            &format!("1 AEAD_AES_256_GCM inline:{THEIR_KEY}"),
            &format!("2 AES_CM_128_HMAC_SHA1_32 inline:{THEIR_KEY}|2^31"),
            &format!("3 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}"),
        ],
    );
    for mode in [SrtpMode::Optional, SrtpMode::Mandatory] {
        let (sdp, media) = answer(&o, mode).expect("answered");
        assert_eq!(lines(&sdp, "m=audio"), ["m=audio 40000 RTP/SAVP 0 101"]);
        // The first line voxline can use (tag 2), answered once with our key.
        let ours = CryptoAttribute {
            tag: 2,
            suite: SrtpSuite::AesCm128HmacSha1_32,
            key: our_key(),
        };
        assert_eq!(
            lines(&sdp, "a=crypto"),
            [format!("a=crypto:{}", ours.value())]
        );
        let srtp = media.srtp.expect("SRTP negotiated");
        assert_eq!(srtp.suite, SrtpSuite::AesCm128HmacSha1_32);
        assert_eq!(srtp.local, our_key());
        assert_eq!(srtp.remote, MasterKey::from_base64(THEIR_KEY).expect("key"));
    }
}

#[test]
fn an_aes_gcm_offer_is_answered_with_a_gcm_key() {
    // 16 bytes of key and 12 of salt: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==" is 0..28.
    let theirs = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGw==";
    let o = offer(
        "RTP/SAVP",
        &[&format!("4 AEAD_AES_128_GCM inline:{theirs}")],
    );
    let (sdp, media) = answer(&o, SrtpMode::Mandatory).expect("answered");
    let ours = our_key().for_suite(SrtpSuite::AeadAes128Gcm);
    assert_eq!(
        lines(&sdp, "a=crypto"),
        [format!(
            "a=crypto:4 AEAD_AES_128_GCM inline:{}",
            ours.to_base64()
        )]
    );
    let srtp = media.srtp.expect("SRTP negotiated");
    assert_eq!(srtp.suite, SrtpSuite::AeadAes128Gcm);
    assert_eq!(srtp.local, ours);
    assert_eq!(srtp.local.salt().len(), 12);
    assert_eq!(
        srtp.remote,
        MasterKey::from_base64_for(SrtpSuite::AeadAes128Gcm, theirs).expect("key")
    );
    // A 30-byte key on a GCM line is not usable: mandatory refuses the offer.
    let o = offer(
        "RTP/SAVP",
        &[&format!("1 AEAD_AES_128_GCM inline:{THEIR_KEY}")],
    );
    assert!(answer(&o, SrtpMode::Mandatory).is_err());
}

#[test]
fn a_suite_list_limits_what_is_offered_and_accepted() {
    let gcm_only = |mode| {
        let mut l = local(mode);
        l.srtp.as_mut().expect("srtp").suites =
            SrtpSuites::new([SrtpSuite::AeadAes128Gcm]).expect("suites");
        l
    };
    // Offered: one line, tag 1.
    let o = String::from_utf8(SdpSession::new(1).create_offer(&gcm_only(SrtpMode::Mandatory)))
        .expect("utf-8");
    let gcm_key = our_key().for_suite(SrtpSuite::AeadAes128Gcm).to_base64();
    assert_eq!(
        lines(&o, "a=crypto"),
        [format!("a=crypto:1 AEAD_AES_128_GCM inline:{gcm_key}")]
    );
    // Accepted: an offer of AES-CM only has nothing this side takes.
    let cm_offer = offer(
        "RTP/SAVP",
        &[&format!("1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}")],
    );
    let refused = SdpSession::new(5).answer(cm_offer.as_bytes(), &gcm_only(SrtpMode::Mandatory));
    assert!(
        matches!(
            refused,
            Err(SdpError::Crypto(CryptoError::UnsupportedSuite(ref s))) if s == "AES_CM_128_HMAC_SHA1_80"
        ),
        "{refused:?}"
    );
}

#[test]
fn srtp_off_refuses_savp_and_ignores_keys_on_a_plain_offer() {
    let line = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}");
    let e = answer(&offer("RTP/SAVP", &[&line]), SrtpMode::Off).expect_err("refused");
    assert_eq!((e.clone(), e.status_code()), (SdpError::SrtpOff, 488));

    // Best-effort keys on RTP/AVP: answered plain, as a peer without SRTP would.
    let (sdp, media) = answer(&offer("RTP/AVP", &[&line]), SrtpMode::Off).expect("answered");
    assert_eq!(lines(&sdp, "m=audio"), ["m=audio 40000 RTP/AVP 0 101"]);
    assert!(lines(&sdp, "a=crypto").is_empty(), "{sdp}");
    assert_eq!(media.srtp, None);
}

#[test]
fn mandatory_refuses_a_plain_offer_with_488() {
    let e = answer(&offer("RTP/AVP", &[]), SrtpMode::Mandatory).expect_err("refused");
    assert_eq!(e, SdpError::SrtpRequired);
    assert_eq!(e.status_code(), 488);
    assert_eq!(e.reason_phrase(), "Not Acceptable Here - SRTP required");
    // Keys it cannot use are no better, and the reason is the first line's.
    let mki = format!("1 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}|2^31|1:4");
    let e = answer(&offer("RTP/AVP", &[&mki]), SrtpMode::Mandatory).expect_err("refused");
    assert_eq!(e, SdpError::Crypto(CryptoError::UnsupportedKey("an MKI")));
    assert_eq!(e.status_code(), 488);
    // RTP/SAVP without a=crypto (DTLS-keyed, say) cannot be keyed here.
    let e = answer(&offer("RTP/SAVP", &[]), SrtpMode::Optional).expect_err("refused");
    assert_eq!(e.status_code(), 488);
}

#[test]
fn optional_takes_best_effort_keys_and_answers_plain_without_them() {
    let line = format!("4 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}");
    let (sdp, media) = answer(&offer("RTP/AVP", &[&line]), SrtpMode::Optional).expect("answer");
    // The offer's transport is kept: keys on RTP/AVP are answered on RTP/AVP.
    assert_eq!(lines(&sdp, "m=audio"), ["m=audio 40000 RTP/AVP 0 101"]);
    assert_eq!(lines(&sdp, "a=crypto").len(), 1, "{sdp}");
    assert!(lines(&sdp, "a=crypto")[0].starts_with("a=crypto:4 AES_CM_128_HMAC_SHA1_80 "));
    assert!(media.srtp.is_some());

    let (sdp, media) = answer(&offer("RTP/AVP", &[]), SrtpMode::Optional).expect("answer");
    assert!(lines(&sdp, "a=crypto").is_empty());
    assert_eq!(media.srtp, None);

    // Keys it cannot use on a best-effort offer: plain, not a failed call.
    let f8 = format!("1 F8_128_HMAC_SHA1_80 inline:{THEIR_KEY}");
    let (_, media) = answer(&offer("RTP/AVP", &[&f8]), SrtpMode::Optional).expect("answer");
    assert_eq!(media.srtp, None);
}

#[test]
fn offers_by_mode() {
    let offer_of = |mode| {
        let mut l = local(mode);
        if mode == SrtpMode::Off {
            l.srtp = None;
        }
        String::from_utf8(SdpSession::new(1).create_offer(&l)).expect("utf-8")
    };
    let off = offer_of(SrtpMode::Off);
    assert!(
        off.contains("RTP/AVP") && !off.contains("a=crypto"),
        "{off}"
    );

    let key = our_key().to_base64();
    // GCM's key is the same key with the salt cut to 12 bytes (28 in all).
    let gcm_key = our_key().for_suite(SrtpSuite::AeadAes128Gcm).to_base64();
    let want = [
        format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}"),
        format!("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{key}"),
        format!("a=crypto:3 AEAD_AES_128_GCM inline:{gcm_key}"),
    ];
    let optional = offer_of(SrtpMode::Optional);
    assert_eq!(
        lines(&optional, "m=audio")[0].split(' ').nth(2),
        Some("RTP/AVP")
    );
    assert_eq!(lines(&optional, "a=crypto"), want);
    let mandatory = offer_of(SrtpMode::Mandatory);
    assert_eq!(
        lines(&mandatory, "m=audio")[0].split(' ').nth(2),
        Some("RTP/SAVP")
    );
    assert_eq!(lines(&mandatory, "a=crypto"), want);
}

/// An answer to our offer, with `crypto` lines on `proto`.
fn their_answer(proto: &str, crypto: &[&str]) -> String {
    offer(proto, crypto)
}

#[test]
fn an_answer_must_pick_a_tag_we_offered_with_its_suite() {
    let mut s = SdpSession::new(1);
    s.create_offer(&local(SrtpMode::Mandatory));
    let good = format!("2 AES_CM_128_HMAC_SHA1_32 inline:{THEIR_KEY}");
    let m = s
        .accept_answer(their_answer("RTP/SAVP", &[&good]).as_bytes())
        .expect("accepted");
    let srtp = m.srtp.expect("SRTP");
    assert_eq!(srtp.suite, SrtpSuite::AesCm128HmacSha1_32);
    assert_eq!(srtp.local, our_key());

    for wrong in [
        format!("2 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}"),
        format!("3 AES_CM_128_HMAC_SHA1_80 inline:{THEIR_KEY}"),
    ] {
        let e = s
            .accept_answer(their_answer("RTP/SAVP", &[&wrong]).as_bytes())
            .expect_err("refused");
        assert!(matches!(e, SdpError::Crypto(_)), "{wrong}: {e}");
    }
    let e = s
        .accept_answer(their_answer("RTP/AVP", &[]).as_bytes())
        .expect_err("plain answer to a mandatory offer");
    assert_eq!(e, SdpError::SrtpRequired);

    // Optional: a plain answer is a plain call.
    let mut s = SdpSession::new(1);
    s.create_offer(&local(SrtpMode::Optional));
    let m = s
        .accept_answer(their_answer("RTP/AVP", &[]).as_bytes())
        .expect("accepted");
    assert_eq!(m.srtp, None);
}

#[test]
fn a_round_trip_crosses_the_keys() {
    let mut alice = SdpSession::new(1);
    let mut alice_local = local(SrtpMode::Mandatory);
    alice_local.srtp.as_mut().expect("srtp").key = MasterKey::new([1; 16], [2; 14]);
    let o = alice.create_offer(&alice_local);

    let mut bob = SdpSession::new(2);
    let mut bob_local = local(SrtpMode::Optional);
    bob_local.rtp_port = 50000;
    bob_local.srtp.as_mut().expect("srtp").key = MasterKey::new([3; 16], [4; 14]);
    let (a, bob_media) = bob.answer(&o, &bob_local).expect("answer");
    let alice_media = alice.accept_answer(&a).expect("accept");

    let (ak, bk) = (alice_media.srtp.expect("a"), bob_media.srtp.expect("b"));
    assert_eq!(
        ak.suite,
        SrtpSuite::AesCm128HmacSha1_80,
        "the offer's first"
    );
    assert_eq!(ak.suite, bk.suite);
    assert_eq!(ak.local, bk.remote);
    assert_eq!(ak.remote, bk.local);
    assert_eq!(alice_media.codec.codec, Codec::Pcmu);
}
