//! SDP offer/answer behaviour (RFC 3264): answering typical offers from SIPp, Asterisk,
//! FreeSWITCH and WebRTC-style stacks, codec preference, hold and resume, session versions,
//! rtcp-mux, ptime, IPv6, several m= lines, and a full offer -> answer -> accept round trip.

use std::net::{IpAddr, SocketAddr};

use voxline::sdp::{Codec, CodecPrefs, Direction, LocalMedia, NegotiatedMedia, SdpSession};

/// Turns an indented multi-line literal into SDP text with CRLF line endings.
fn sdp(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

fn sock(s: &str) -> SocketAddr {
    s.parse().expect("test socket address")
}

fn local() -> LocalMedia {
    LocalMedia {
        address: ip("192.0.2.10"),
        rtp_port: 40000,
        ptime_ms: 20,
        rtcp_mux: true,
        codecs: CodecPrefs::default(),
        telephone_event: true,
        direction: Direction::SendRecv,
        srtp: None,
    }
}

fn answer(offer: &str, local: &LocalMedia) -> (String, NegotiatedMedia) {
    let (body, media) = SdpSession::new(42)
        .answer(offer.as_bytes(), local)
        .expect("offer is answerable");
    (String::from_utf8(body).expect("answer is UTF-8"), media)
}

/// The attribute and m= lines of an SDP text, for order-sensitive assertions.
fn media_lines(text: &str) -> Vec<&str> {
    text.split("\r\n")
        .filter(|l| l.starts_with("m=") || l.starts_with("a="))
        .collect()
}

// SIPp's built-in uac scenario body (sipp -sn uac).
const SIPP_UAC: &str = "
    v=0
    o=user1 53655765 2353687637 IN IP4 127.0.0.1
    s=-
    c=IN IP4 127.0.0.1
    t=0 0
    m=audio 6000 RTP/AVP 0
    a=rtpmap:0 PCMU/8000
";

#[test]
fn sipp_uac_pcmu_offer_gets_exact_answer() {
    let (text, media) = answer(&sdp(SIPP_UAC), &local());
    assert_eq!(
        text,
        sdp("
            v=0
            o=voxline 42 42 IN IP4 192.0.2.10
            s=voxline
            c=IN IP4 192.0.2.10
            t=0 0
            m=audio 40000 RTP/AVP 0
            a=rtpmap:0 PCMU/8000
            a=ptime:20
            a=sendrecv
        ")
    );
    assert_eq!(media.remote_rtp, sock("127.0.0.1:6000"));
    assert_eq!(media.remote_rtcp, Some(sock("127.0.0.1:6001")));
    assert_eq!(media.codec.codec, Codec::Pcmu);
    assert_eq!(media.codec.payload_type.get(), 0);
    assert_eq!(media.codec.clock_rate, 8000);
    assert_eq!(media.codec.channels, 1);
    assert_eq!(media.codec.fmtp, None);
    assert_eq!(media.telephone_event, None);
    assert_eq!(media.ptime_ms, 20);
    assert_eq!(media.direction, Direction::SendRecv);
    assert!(!media.rtcp_mux);
    assert!(!media.remote_hold);
}

#[test]
fn lf_only_offer_is_accepted() {
    let lf_only = sdp(SIPP_UAC).replace("\r\n", "\n");
    assert!(!lf_only.contains('\r'));
    let (text, media) = answer(&lf_only, &local());
    assert_eq!(media.codec.codec, Codec::Pcmu);
    assert!(text.contains("m=audio 40000 RTP/AVP 0\r\n"));
}

#[test]
fn sipp_pcap_style_static_pt_without_rtpmap_and_dtmf() {
    // Like SIPp's uac_pcap scenario, but without the optional rtpmap for static PT 8.
    let offer = sdp("
        v=0
        o=user1 53655765 2353687637 IN IP4 10.1.1.5
        s=-
        c=IN IP4 10.1.1.5
        t=0 0
        m=audio 6002 RTP/AVP 8 101
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-11,16
    ");
    let (text, media) = answer(&offer, &local());
    assert_eq!(media.codec.codec, Codec::Pcma);
    assert_eq!(media.codec.payload_type.get(), 8);
    assert_eq!(media.telephone_event.map(|p| p.get()), Some(101));
    assert_eq!(
        media_lines(&text),
        [
            "m=audio 40000 RTP/AVP 8 101",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=sendrecv",
        ]
    );
}

#[test]
fn asterisk_style_offer_uses_our_preference_not_theirs() {
    // Asterisk lists PCMA first and uses 111 for G726, not for Opus.
    let offer = sdp("
        v=0
        o=- 1866253712 1866253712 IN IP4 192.168.1.20
        s=Asterisk
        c=IN IP4 192.168.1.20
        t=0 0
        m=audio 10046 RTP/AVP 8 0 3 111 101
        a=rtpmap:8 PCMA/8000
        a=rtpmap:0 PCMU/8000
        a=rtpmap:3 GSM/8000
        a=rtpmap:111 G726-32/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=ptime:20
        a=maxptime:150
        a=sendrecv
    ");
    let mut l = local();
    l.codecs = CodecPrefs::new([Codec::Opus, Codec::Pcmu, Codec::Pcma]).expect("prefs");
    let (text, media) = answer(&offer, &l);
    assert_eq!(media.codec.codec, Codec::Pcmu);
    assert_eq!(media.codec.payload_type.get(), 0);
    assert_eq!(media.telephone_event.map(|p| p.get()), Some(101));
    assert!(text.contains("m=audio 40000 RTP/AVP 0 101\r\n"));
    assert!(!text.contains("111"));
    assert_eq!(media.remote_rtp, sock("192.168.1.20:10046"));
}

#[test]
fn freeswitch_style_opus_offer_with_two_telephone_events() {
    let offer = sdp("
        v=0
        o=FreeSWITCH 1712345678 1712345679 IN IP4 10.0.0.5
        s=FreeSWITCH
        c=IN IP4 10.0.0.5
        t=0 0
        m=audio 16384 RTP/AVP 102 9 0 8 103 101
        a=rtpmap:102 opus/48000/2
        a=fmtp:102 useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000; ptime=20; minptime=10; maxptime=40
        a=rtpmap:9 G722/8000
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=rtpmap:103 telephone-event/48000
        a=fmtp:103 0-16
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=ptime:20
    ");
    let mut l = local();
    l.codecs = CodecPrefs::new([Codec::Opus, Codec::Pcmu]).expect("prefs");
    let (text, media) = answer(&offer, &l);
    assert_eq!(media.codec.codec, Codec::Opus);
    assert_eq!(media.codec.payload_type.get(), 102);
    assert_eq!(media.codec.clock_rate, 48000);
    assert_eq!(media.codec.channels, 2);
    assert_eq!(
        media.codec.fmtp.as_deref(),
        Some(
            "useinbandfec=1; maxaveragebitrate=30000; maxplaybackrate=48000; ptime=20; \
             minptime=10; maxptime=40"
        )
    );
    // The 8 kHz telephone-event, not the 48 kHz one.
    assert_eq!(media.telephone_event.map(|p| p.get()), Some(101));
    assert_eq!(
        media_lines(&text),
        [
            "m=audio 40000 RTP/AVP 102 101",
            "a=rtpmap:102 opus/48000/2",
            "a=fmtp:102 minptime=10;useinbandfec=1",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
            "a=sendrecv",
        ]
    );
}

#[test]
fn opus_at_pt_96_and_dtmf_at_98_are_remapped() {
    let offer = sdp("
        v=0
        o=- 4611731400430051336 2 IN IP4 203.0.113.50
        s=-
        c=IN IP4 203.0.113.50
        t=0 0
        m=audio 50000 RTP/AVP 96 98
        a=rtpmap:96 OPUS/48000/2
        a=fmtp:96 stereo=0;useinbandfec=1
        a=rtpmap:98 Telephone-Event/8000
        a=fmtp:98 0-15
        a=rtcp-mux
    ");
    let (text, media) = answer(&offer, &local());
    assert_eq!(media.codec.codec, Codec::Opus);
    assert_eq!(media.codec.payload_type.get(), 96);
    assert_eq!(media.codec.fmtp.as_deref(), Some("stereo=0;useinbandfec=1"));
    assert_eq!(media.telephone_event.map(|p| p.get()), Some(98));
    assert!(text.contains("m=audio 40000 RTP/AVP 96 98\r\n"));
    assert!(text.contains("a=rtpmap:96 opus/48000/2\r\n"));
    assert!(text.contains("a=rtpmap:98 telephone-event/8000\r\n"));
    assert!(text.contains("a=rtcp-mux\r\n"));
    assert!(media.rtcp_mux);
    assert_eq!(media.remote_rtcp, None);
}

#[test]
fn preference_order_decides_between_common_codecs() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 9 0 8
    ");
    let (_, media) = answer(&offer, &local());
    assert_eq!(
        media.codec.codec,
        Codec::Pcmu,
        "default prefs put PCMU first"
    );

    let mut l = local();
    l.codecs = "g722, pcma".parse().expect("prefs");
    let (text, media) = answer(&offer, &l);
    assert_eq!(media.codec.codec, Codec::G722);
    assert_eq!(media.codec.payload_type.get(), 9);
    assert_eq!(media.codec.clock_rate, 8000, "RFC 3551 G.722 clock quirk");
    assert!(text.contains("a=rtpmap:9 G722/8000\r\n"));

    l.codecs = "pcma".parse().expect("prefs");
    assert_eq!(answer(&offer, &l).1.codec.codec, Codec::Pcma);
}

#[test]
fn telephone_event_only_when_both_sides_have_it() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 0 101
        a=rtpmap:101 telephone-event/8000
    ");
    let mut l = local();
    l.telephone_event = false;
    let (text, media) = answer(&offer, &l);
    assert_eq!(media.telephone_event, None);
    assert!(text.contains("m=audio 40000 RTP/AVP 0\r\n"));
    assert!(!text.contains("telephone-event"));
}

fn hold_offer(connection: &str, direction: &str) -> String {
    sdp(&format!(
        "
        v=0
        o=- 20 21 IN IP4 198.51.100.1
        s=-
        c=IN IP4 {connection}
        t=0 0
        m=audio 7000 RTP/AVP 0
        {direction}
        "
    ))
}

#[test]
fn peer_hold_with_sendonly_is_answered_recvonly() {
    let (text, media) = answer(&hold_offer("198.51.100.1", "a=sendonly"), &local());
    assert!(text.contains("a=recvonly\r\n"));
    assert_eq!(media.direction, Direction::RecvOnly);
    assert!(media.remote_hold);
}

#[test]
fn peer_hold_with_inactive_is_answered_inactive() {
    let (text, media) = answer(&hold_offer("198.51.100.1", "a=inactive"), &local());
    assert!(text.contains("a=inactive\r\n"));
    assert_eq!(media.direction, Direction::Inactive);
    assert!(media.remote_hold);
}

#[test]
fn rfc2543_hold_with_zero_address() {
    let (text, media) = answer(&hold_offer("0.0.0.0", ""), &local());
    assert!(text.contains("a=recvonly\r\n"));
    assert_eq!(media.direction, Direction::RecvOnly);
    assert!(media.remote_hold);
    assert_eq!(media.remote_rtp, sock("0.0.0.0:7000"));

    let (text, media) = answer(&hold_offer("0.0.0.0", "a=recvonly"), &local());
    assert!(text.contains("a=inactive\r\n"));
    assert_eq!(media.direction, Direction::Inactive);
    assert!(media.remote_hold);
}

#[test]
fn recvonly_offer_is_answered_sendonly_and_is_not_hold() {
    let (text, media) = answer(&hold_offer("198.51.100.1", "a=recvonly"), &local());
    assert!(text.contains("a=sendonly\r\n"));
    assert_eq!(media.direction, Direction::SendOnly);
    assert!(!media.remote_hold);
}

#[test]
fn sendrecv_offer_gets_our_local_direction() {
    let mut l = local();
    l.direction = Direction::SendOnly;
    let (text, media) = answer(&hold_offer("198.51.100.1", "a=sendrecv"), &l);
    assert!(text.contains("a=sendonly\r\n"));
    assert_eq!(media.direction, Direction::SendOnly);
    assert!(!media.remote_hold);
}

#[test]
fn media_level_direction_overrides_session_level() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        a=sendonly
        m=audio 7000 RTP/AVP 0
        a=sendrecv
    ");
    let (_, media) = answer(&offer, &local());
    assert_eq!(media.direction, Direction::SendRecv);

    let session_level_only = offer.replace("a=sendrecv\r\n", "");
    let (_, media) = answer(&session_level_only, &local());
    assert_eq!(media.direction, Direction::RecvOnly);
    assert!(media.remote_hold);
}

#[test]
fn media_level_connection_overrides_session_level() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 0
        c=IN IP4 198.51.100.99
    ");
    let (_, media) = answer(&offer, &local());
    assert_eq!(media.remote_rtp, sock("198.51.100.99:7000"));
}

#[test]
fn hold_and_resume_by_the_peer_bump_our_version_only_on_change() {
    let mut session = SdpSession::with_version(1000, 5);
    let l = local();
    let normal = hold_offer("198.51.100.1", "a=sendrecv");
    let held = hold_offer("198.51.100.1", "a=sendonly");

    let (first, media) = session.answer(normal.as_bytes(), &l).expect("initial");
    assert!(String::from_utf8_lossy(&first).contains("o=voxline 1000 5 IN IP4 192.0.2.10\r\n"));
    assert!(!media.remote_hold);

    // Session refresh re-INVITE with the same offer: same answer, same version.
    let (again, _) = session.answer(normal.as_bytes(), &l).expect("refresh");
    assert_eq!(again, first);
    assert_eq!(session.version(), 5);

    let (hold_answer, media) = session.answer(held.as_bytes(), &l).expect("hold");
    let hold_text = String::from_utf8_lossy(&hold_answer);
    assert!(hold_text.contains("o=voxline 1000 6 IN IP4"));
    assert!(hold_text.contains("a=recvonly\r\n"));
    assert!(media.remote_hold);

    let (resume_answer, media) = session.answer(normal.as_bytes(), &l).expect("resume");
    let resume_text = String::from_utf8_lossy(&resume_answer);
    assert!(resume_text.contains("o=voxline 1000 7 IN IP4"));
    assert!(resume_text.contains("a=sendrecv\r\n"));
    assert!(!media.remote_hold);
    assert_eq!(media.direction, Direction::SendRecv);
}

#[test]
fn offer_lists_all_codecs_with_dtmf_and_rtcp_mux() {
    let mut session = SdpSession::new(777);
    let offer = String::from_utf8(session.create_offer(&local())).expect("UTF-8");
    assert_eq!(
        offer,
        sdp("
            v=0
            o=voxline 777 777 IN IP4 192.0.2.10
            s=voxline
            c=IN IP4 192.0.2.10
            t=0 0
            m=audio 40000 RTP/AVP 0 8 9 111 101
            a=rtpmap:0 PCMU/8000
            a=rtpmap:8 PCMA/8000
            a=rtpmap:9 G722/8000
            a=rtpmap:111 opus/48000/2
            a=fmtp:111 minptime=10;useinbandfec=1
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-16
            a=ptime:20
            a=sendrecv
            a=rtcp-mux
        ")
    );
}

#[test]
fn our_hold_and_resume_reoffers_bump_version() {
    let mut session = SdpSession::with_version(1, 1);
    let mut l = local();
    let initial = String::from_utf8(session.create_offer(&l)).expect("UTF-8");
    assert!(initial.contains("o=voxline 1 1 IN IP4"));

    l.direction = Direction::SendOnly;
    let hold = String::from_utf8(session.create_offer(&l)).expect("UTF-8");
    assert!(hold.contains("o=voxline 1 2 IN IP4"));
    assert!(hold.contains("a=sendonly\r\n"));

    // The held peer answers recvonly: we only send, and are not held ourselves.
    let answer = sdp("
        v=0
        o=peer 9 10 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 0
        a=recvonly
    ");
    let media = session
        .accept_answer(answer.as_bytes())
        .expect("hold answer");
    assert_eq!(media.direction, Direction::SendOnly);
    assert!(!media.remote_hold);

    l.direction = Direction::SendRecv;
    let resume = String::from_utf8(session.create_offer(&l)).expect("UTF-8");
    assert!(resume.contains("o=voxline 1 3 IN IP4"));
    assert!(resume.contains("a=sendrecv\r\n"));
    let media = session
        .accept_answer(answer.replace("a=recvonly", "a=sendrecv").as_bytes())
        .expect("resume answer");
    assert_eq!(media.direction, Direction::SendRecv);
    assert_eq!(session.version(), 3);
}

#[test]
fn rtcp_mux_needs_both_sides() {
    let base = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 0
        a=rtcp-mux
    ");
    let (text, media) = answer(&base, &local());
    assert!(text.contains("a=rtcp-mux\r\n"));
    assert!(media.rtcp_mux);
    assert_eq!(media.remote_rtcp, None);

    let mut l = local();
    l.rtcp_mux = false;
    let (text, media) = answer(&base, &l);
    assert!(!text.contains("rtcp-mux"));
    assert!(!media.rtcp_mux);
    assert_eq!(media.remote_rtcp, Some(sock("198.51.100.1:7001")));
}

#[test]
fn rtcp_attribute_gives_the_rtcp_address() {
    let with_address = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 0
        a=rtcp:53021 IN IP4 203.0.113.9
    ");
    assert_eq!(
        answer(&with_address, &local()).1.remote_rtcp,
        Some(sock("203.0.113.9:53021"))
    );
    let port_only = with_address.replace("a=rtcp:53021 IN IP4 203.0.113.9", "a=rtcp:7005");
    assert_eq!(
        answer(&port_only, &local()).1.remote_rtcp,
        Some(sock("198.51.100.1:7005"))
    );
}

#[test]
fn offered_ptime_is_honoured_when_sane() {
    let offer = |ptime: &str| {
        sdp(&format!(
            "
            v=0
            o=- 1 1 IN IP4 198.51.100.1
            s=-
            c=IN IP4 198.51.100.1
            t=0 0
            m=audio 7000 RTP/AVP 0
            a=ptime:{ptime}
            "
        ))
    };
    let (text, media) = answer(&offer("30"), &local());
    assert_eq!(media.ptime_ms, 30);
    assert!(text.contains("a=ptime:30\r\n"));
    assert_eq!(answer(&offer("10"), &local()).1.ptime_ms, 10);
    assert_eq!(answer(&offer("40"), &local()).1.ptime_ms, 20);
    assert_eq!(answer(&offer("banana"), &local()).1.ptime_ms, 20);
    let mut l = local();
    l.ptime_ms = 30;
    assert_eq!(answer(&offer("60"), &l).1.ptime_ms, 30);
}

#[test]
fn ipv6_offer_and_ipv6_answer() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP6 2001:db8::5
        s=-
        c=IN IP6 2001:db8::5
        t=0 0
        m=audio 7000 RTP/AVP 8
    ");
    let mut l = local();
    l.address = ip("2001:db8::10");
    let (text, media) = answer(&offer, &l);
    assert_eq!(media.remote_rtp, sock("[2001:db8::5]:7000"));
    assert_eq!(media.remote_rtcp, Some(sock("[2001:db8::5]:7001")));
    assert!(text.contains("o=voxline 42 42 IN IP6 2001:db8::10\r\n"));
    assert!(text.contains("c=IN IP6 2001:db8::10\r\n"));
}

#[test]
fn non_audio_streams_are_rejected_in_place() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=video 7002 RTP/AVP 31 34
        a=rtpmap:31 H261/90000
        m=audio 7000 RTP/AVP 0
        m=image 7004 udptl t38
    ");
    let (text, media) = answer(&offer, &local());
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("m="))
            .collect::<Vec<_>>(),
        [
            "m=video 0 RTP/AVP 31 34",
            "m=audio 40000 RTP/AVP 0",
            "m=image 0 udptl t38",
        ]
    );
    assert_eq!(media.remote_rtp, sock("198.51.100.1:7000"));
}

#[test]
fn disabled_and_secure_audio_streams_are_skipped() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 0 RTP/AVP 0
        m=audio 7010 RTP/SAVP 0
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
        m=audio 7020 RTP/AVP 8 0
        m=audio 7030 RTP/AVP 0
    ");
    let (text, media) = answer(&offer, &local());
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("m="))
            .collect::<Vec<_>>(),
        [
            "m=audio 0 RTP/AVP 0",
            "m=audio 0 RTP/SAVP 0",
            "m=audio 40000 RTP/AVP 0",
            "m=audio 0 RTP/AVP 0",
        ]
    );
    assert_eq!(media.remote_rtp, sock("198.51.100.1:7020"));
    assert_eq!(media.codec.codec, Codec::Pcmu);
}

#[test]
fn first_audio_stream_without_common_codec_falls_through_to_the_next() {
    let offer = sdp("
        v=0
        o=- 1 1 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 18
        m=audio 7002 RTP/AVP 8
    ");
    let (text, media) = answer(&offer, &local());
    assert!(text.contains("m=audio 0 RTP/AVP 18\r\n"));
    assert!(text.contains("m=audio 40000 RTP/AVP 8\r\n"));
    assert_eq!(media.remote_rtp, sock("198.51.100.1:7002"));
}

#[test]
fn offer_answer_accept_round_trip() {
    let mut alice = SdpSession::new(1);
    let mut bob = SdpSession::new(2);
    let mut alice_local = local();
    alice_local.codecs = CodecPrefs::new([Codec::Opus, Codec::Pcmu]).expect("prefs");
    let bob_local = LocalMedia {
        address: ip("198.51.100.20"),
        rtp_port: 30000,
        ..local()
    };

    let offer = alice.create_offer(&alice_local);
    let (answer_body, bob_media) = bob.answer(&offer, &bob_local).expect("bob answers");
    let alice_media = alice.accept_answer(&answer_body).expect("alice accepts");

    // Bob's first preference that Alice offered is PCMU.
    assert_eq!(bob_media.codec.codec, Codec::Pcmu);
    assert_eq!(alice_media.codec, bob_media.codec);
    assert_eq!(alice_media.remote_rtp, sock("198.51.100.20:30000"));
    assert_eq!(bob_media.remote_rtp, sock("192.0.2.10:40000"));
    assert_eq!(alice_media.telephone_event.map(|p| p.get()), Some(101));
    assert_eq!(bob_media.telephone_event.map(|p| p.get()), Some(101));
    assert!(alice_media.rtcp_mux && bob_media.rtcp_mux);
    assert_eq!(alice_media.direction, Direction::SendRecv);
    assert_eq!(bob_media.direction, Direction::SendRecv);

    // The same answer again (183 then 200) is accepted again with the same result.
    assert_eq!(alice.accept_answer(&answer_body), Ok(alice_media));

    // Bob preferring Opus gets Opus on Alice's PT 111.
    let mut bob_opus = bob_local.clone();
    bob_opus.codecs = "opus,pcmu".parse().expect("prefs");
    let offer = alice.create_offer(&alice_local);
    let (answer_body, bob_media) = bob.answer(&offer, &bob_opus).expect("bob answers");
    assert_eq!(bob_media.codec.payload_type.get(), 111);
    assert_eq!(
        bob_media.codec.fmtp.as_deref(),
        Some("minptime=10;useinbandfec=1")
    );
    let alice_media = alice.accept_answer(&answer_body).expect("alice accepts");
    assert_eq!(alice_media.codec.codec, Codec::Opus);
    assert_eq!(alice_media.codec.payload_type.get(), 111);
}

#[test]
fn accept_answer_uses_the_answers_payload_type_and_order() {
    let mut session = SdpSession::new(1);
    session.create_offer(&local());
    let answer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 96 8 97
        a=rtpmap:96 opus/48000/2
        a=rtpmap:8 PCMA/8000
        a=rtpmap:97 telephone-event/8000
        a=ptime:30
        a=rtcp-mux
    ");
    let media = session.accept_answer(answer.as_bytes()).expect("accepted");
    assert_eq!(media.codec.codec, Codec::Opus);
    assert_eq!(media.codec.payload_type.get(), 96);
    assert_eq!(media.telephone_event.map(|p| p.get()), Some(97));
    assert_eq!(media.ptime_ms, 30);
    assert!(media.rtcp_mux);
    assert_eq!(media.remote_rtcp, None);
}

#[test]
fn accept_answer_without_rtcp_mux_uses_next_port() {
    let mut session = SdpSession::new(1);
    session.create_offer(&local());
    let answer = sdp("
        v=0
        o=- 5 5 IN IP4 198.51.100.1
        s=-
        c=IN IP4 198.51.100.1
        t=0 0
        m=audio 7000 RTP/AVP 0
        a=inactive
    ");
    let media = session.accept_answer(answer.as_bytes()).expect("accepted");
    assert!(!media.rtcp_mux);
    assert_eq!(media.remote_rtcp, Some(sock("198.51.100.1:7001")));
    assert_eq!(media.direction, Direction::Inactive);
    assert!(media.remote_hold);
}
