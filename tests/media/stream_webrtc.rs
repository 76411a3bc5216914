//! WebRTC media on a virtual clock: a browser-like WebRTC stack (str0m as a full ICE agent,
//! DTLS client, its own SDP offer with BUNDLE, rtcp-mux and `UDP/TLS/RTP/SAVPF`) calls
//! [`WebRtcPeer`]; ICE-lite and DTLS come up, and audio goes both ways through DTLS-SRTP and
//! the call's [`MediaStream`]: the browser's 440 Hz tone reaches the stream's caller frames,
//! the stream's 1000 Hz agent audio reaches the browser. The codec follows the call's
//! preference among the offer's (PCMU or Opus); an offer without a common codec is refused;
//! garbage datagrams are dropped and counted.

use crate::media_stream_support;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use media_stream_support::*;
use str0m::change::SdpAnswer;
use str0m::format::{Codec as RtcCodec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use voxline::media::codec::{decoder_for, encoder_for};
use voxline::media::stream::{MediaEvent, MediaOutput, MediaStream};
use voxline::media::webrtc::{WebRtcError, WebRtcOutput, WebRtcPeer, is_webrtc_offer};
use voxline::sdp::{Codec, CodecPrefs};

const BROWSER: &str = "192.0.2.50:50000";
const VOXLINE: &str = "192.0.2.10:40000";

struct Call {
    now: Instant,
    browser: Rtc,
    mid: Mid,
    peer: WebRtcPeer,
    stream: MediaStream,
    /// Datagrams in flight: (deliver at, from browser?, payload).
    net: VecDeque<(Instant, bool, Vec<u8>)>,
    browser_connected: bool,
    peer_connected: bool,
    /// What the browser received: (payload type, payload).
    browser_heard: Vec<(u8, Vec<u8>)>,
    /// The stream's caller frames.
    caller: Vec<i16>,
    browser_next: Instant,
    peer_next: Instant,
    stream_next: Instant,
}

/// A browser's offer (audio: the given codecs and telephone-event/8000 on 101).
fn browser(
    t0: Instant,
    opus: bool,
    pcmu: bool,
) -> (Rtc, String, str0m::change::SdpPendingOffer, Mid) {
    let mut cfg = Rtc::builder().set_rtp_mode(true).clear_codecs();
    if opus {
        cfg = cfg.enable_opus(true, false);
    }
    if pcmu {
        cfg = cfg.enable_pcmu(true, false);
    }
    cfg.codec_config().add_config(
        Pt::from(101),
        None,
        RtcCodec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams {
            telephone_event_max: Some(16),
            ..Default::default()
        },
    );
    let mut rtc = cfg.build(t0);
    rtc.add_local_candidate(Candidate::host(addr(BROWSER), "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().expect("offer");
    (rtc, offer.to_sdp_string(), pending, mid)
}

impl Call {
    fn new(prefs: &[Codec], opus: bool, pcmu: bool) -> Call {
        let t0 = Instant::now();
        let (mut browser, offer, pending, mid) = browser(t0, opus, pcmu);
        assert!(is_webrtc_offer(offer.as_bytes()), "{offer}");
        let prefs = CodecPrefs::new(prefs.iter().copied()).expect("prefs");
        let (peer, answer) =
            WebRtcPeer::accept_offer(t0, &offer, addr(VOXLINE), &prefs).expect("answered");
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("a=setup:passive"), "{answer}");
        assert!(answer.contains("UDP/TLS/RTP/SAVPF"), "{answer}");
        browser
            .sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&answer).expect("sdp"))
            .expect("answer accepted");
        let stream =
            MediaStream::new(config(peer.negotiated().clone(), 0xa, 3, t0), t0).expect("stream");
        let mut call = Call {
            now: t0,
            browser,
            mid,
            peer,
            stream,
            net: VecDeque::new(),
            browser_connected: false,
            peer_connected: false,
            browser_heard: Vec::new(),
            caller: Vec::new(),
            browser_next: t0,
            peer_next: t0,
            stream_next: t0,
        };
        call.drain_all();
        call
    }

    fn drain_browser(&mut self) {
        loop {
            match self.browser.poll_output().expect("browser output") {
                Output::Timeout(t) => {
                    self.browser_next = t;
                    return;
                }
                Output::Transmit(t) => {
                    assert_eq!(t.destination, addr(VOXLINE));
                    self.net
                        .push_back((self.now + ms(1), true, t.contents.to_vec()));
                }
                Output::Event(Event::Connected) => self.browser_connected = true,
                Output::Event(Event::RtpPacket(p)) => self
                    .browser_heard
                    .push((*p.header.payload_type, p.payload.to_vec())),
                Output::Event(_) => {}
            }
        }
    }

    fn drain_peer(&mut self) {
        loop {
            match self.peer.poll_output() {
                WebRtcOutput::Timeout(t) => {
                    self.peer_next = t;
                    return;
                }
                WebRtcOutput::Transmit { to, payload } => {
                    assert_eq!(to, addr(BROWSER));
                    self.net.push_back((self.now + ms(1), false, payload));
                }
                WebRtcOutput::Rtp(bytes) => {
                    let from = self.peer.media_source();
                    self.stream.handle_rtp(self.now, from, &bytes);
                    self.drain_stream();
                }
                WebRtcOutput::Connected => self.peer_connected = true,
                WebRtcOutput::Disconnected => panic!("disconnected"),
            }
        }
    }

    fn drain_stream(&mut self) {
        loop {
            match self.stream.poll_output() {
                MediaOutput::Timeout(t) => {
                    self.stream_next = t;
                    return;
                }
                MediaOutput::Transmit { payload, rtcp, .. } => {
                    if !rtcp {
                        self.peer.send_rtp(self.now, &payload);
                    }
                }
                MediaOutput::Event(MediaEvent::Frame { caller, .. }) => {
                    self.caller.extend_from_slice(&caller)
                }
                MediaOutput::Event(_) => {}
            }
        }
    }

    fn drain_all(&mut self) {
        self.drain_browser();
        self.drain_peer();
        self.drain_stream();
        self.drain_peer();
    }

    /// Runs until `until`, the browser writing `packets` (one per 20 ms once connected: payload
    /// type, RTP timestamp, payload).
    fn run(&mut self, until: Instant, mut packets: impl FnMut(u64) -> (u8, u32, Vec<u8>)) {
        let mut sent = 0u64;
        let mut next_send: Option<Instant> = None;
        while self.now < until {
            let mut next = [self.browser_next, self.peer_next, self.stream_next, until]
                .into_iter()
                .min()
                .unwrap_or(until);
            if let Some((at, _, _)) = self.net.front() {
                next = next.min(*at);
            }
            if let Some(t) = next_send {
                next = next.min(t);
            }
            self.now = self.now.max(next);
            let now = self.now;
            while self.net.front().is_some_and(|(at, _, _)| *at <= now) {
                let (_, from_browser, payload) = self.net.pop_front().expect("datagram");
                if from_browser {
                    self.peer.handle_datagram(now, addr(BROWSER), &payload);
                    self.drain_peer();
                } else {
                    let r = Receive::new(Protocol::Udp, addr(VOXLINE), addr(BROWSER), &payload)
                        .expect("datagram");
                    self.browser
                        .handle_input(Input::Receive(now, r))
                        .expect("browser input");
                    self.drain_browser();
                }
            }
            if self.browser_next <= now {
                self.browser
                    .handle_input(Input::Timeout(now))
                    .expect("timeout");
                self.drain_browser();
            }
            if self.peer_next <= now {
                self.peer.handle_timeout(now);
                self.drain_peer();
            }
            if self.stream_next <= now {
                self.stream.handle_timeout(now);
                self.drain_stream();
                self.drain_peer();
            }
            if self.browser_connected && next_send.is_none() {
                next_send = Some(now);
            }
            if let Some(t) = next_send
                && t <= now
            {
                let (pt, ts, payload) = packets(sent);
                let mid = self.mid;
                let mut api = self.browser.direct_api();
                let tx = api.stream_tx_by_mid(mid, None).expect("browser tx stream");
                tx.write_rtp(RtpWrite::new(
                    Pt::from(pt),
                    SeqNo::from(sent + 1000),
                    ts,
                    now,
                    payload,
                ));
                self.drain_browser();
                sent += 1;
                next_send = Some(t + Duration::from_millis(20));
            }
        }
    }
}

/// Audio both ways on a call whose codec is `codec`: the browser sends 440 Hz encoded with
/// the negotiated codec, the agent 1000 Hz; each side decodes what it got.
fn flows_both_ways(codec: Codec) {
    let (opus, pcmu) = (codec == Codec::Opus, codec == Codec::Pcmu);
    let mut call = Call::new(&[codec], opus, pcmu);
    let neg = call.peer.negotiated().clone();
    assert_eq!(neg.codec.codec, codec);
    assert!(neg.telephone_event.is_some(), "telephone-event was offered");
    assert!(neg.srtp.is_none() && neg.rtcp_mux);
    let rate = call.stream.sample_rate();
    let frame = call.stream.frame_samples();
    // The agent says something: 1.5 s of 1000 Hz.
    call.stream
        .send_audio(&tone(1000.0, 8000.0, rate, 0, rate as usize * 3 / 2))
        .expect("queue");
    let mut enc = encoder_for(&neg.codec, 20).expect("encoder");
    let clock_step = neg.codec.clock_rate / 50;
    let pt = neg.codec.payload_type.get();
    let t0 = call.now;
    call.run(t0 + Duration::from_secs(3), |k| {
        let pcm = tone(440.0, 8000.0, rate, k as usize * frame, frame);
        let mut out = Vec::new();
        enc.encode(&pcm, &mut out).expect("encode");
        (pt, k as u32 * clock_step, out)
    });
    assert!(
        call.browser_connected && call.peer_connected,
        "ICE and DTLS up"
    );
    assert!(call.peer.is_connected());
    // The browser heard the agent's tone.
    let mut dec = decoder_for(&neg.codec).expect("decoder");
    let mut heard: Vec<i16> = Vec::new();
    for (p, payload) in &call.browser_heard {
        if *p == pt {
            dec.decode(payload, &mut heard).expect("decode");
        }
    }
    let drate = dec.sample_rate() as usize;
    assert!(
        heard.len() >= drate,
        "{} samples reached the browser",
        heard.len()
    );
    let window = &heard[drate / 5..drate * 6 / 5];
    assert!(rms(window) > 3000.0, "level {}", rms(window));
    assert!(tone_purity(window, 1000.0, drate as u32) > 0.8);
    // The stream heard the browser's tone.
    let st = call.stream.stats();
    assert!(st.packets_received > 100, "{st:?}");
    let r = rate as usize;
    let caller = &call.caller[r..2 * r];
    assert!(rms(caller) > 3000.0, "caller level {}", rms(caller));
    assert!(tone_purity(caller, 440.0, rate) > 0.8);
}

#[test]
fn a_browser_offer_connects_and_pcmu_flows_both_ways() {
    flows_both_ways(Codec::Pcmu);
}

#[test]
fn opus_flows_both_ways() {
    flows_both_ways(Codec::Opus);
}

#[test]
fn the_call_preference_picks_opus_and_an_offer_without_a_common_codec_is_refused() {
    let mut call = Call::new(&[Codec::Opus, Codec::Pcmu], true, true);
    assert_eq!(call.peer.negotiated().codec.codec, Codec::Opus);
    // Garbage on the socket is dropped and counted, never a panic.
    let now = call.now;
    call.peer.handle_datagram(now, addr(BROWSER), &[]);
    call.peer.handle_datagram(now, addr(BROWSER), &[0xff; 40]);
    assert_eq!(call.peer.dropped_malformed(), 2);
    // A browser offers no maxplaybackrate (48 kHz); the stream runs at 24 kHz.
    let fmtp = call
        .peer
        .negotiated()
        .codec
        .fmtp
        .clone()
        .unwrap_or_default();
    assert!(fmtp.contains("maxplaybackrate=24000"), "{fmtp}");
    assert_eq!(call.stream.sample_rate(), 24_000);

    let t0 = Instant::now();
    let (_, offer, _, _) = browser(t0, true, false);
    let prefs = CodecPrefs::new([Codec::Pcma]).expect("prefs");
    let err = WebRtcPeer::accept_offer(t0, &offer, addr(VOXLINE), &prefs).expect_err("refused");
    assert!(matches!(err, WebRtcError::NoCommonCodec(_)), "{err}");
    assert!(err.to_string().contains("opus/48000"), "{err}");
    let err = WebRtcPeer::accept_offer(t0, "v=0\r\nnonsense", addr(VOXLINE), &prefs)
        .expect_err("refused");
    assert!(matches!(err, WebRtcError::Offer(_)), "{err}");
    // A plain SIP offer is not a WebRTC one.
    assert!(!is_webrtc_offer(common_offer().as_bytes()));
}

fn common_offer() -> String {
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
     m=audio 4000 RTP/AVP 0\r\n"
        .to_owned()
}

/// Firefox 153's offer, as its `RTCPeerConnection` made it for the /phone page (Opus with
/// `maxplaybackrate=48000;stereo=1`, G.722, G.711, telephone-event; host candidates on two
/// families, TCP candidates, `a=rtcp` beside `a=rtcp-mux`, trickle ICE).
const FIREFOX_OFFER: &str = "v=0\r\no=mozilla...THIS_IS_SDPARTA-99.0 3803520428091351708 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=sendrecv\r\na=fingerprint:sha-256 F3:5D:7F:CF:27:19:B3:76:A7:AD:91:1A:4A:67:39:75:05:BF:1F:56:B7:2A:78:25:80:0E:A9:F2:E2:51:10:9B\r\na=group:BUNDLE 0\r\na=ice-options:trickle\r\na=msid-semantic:WMS *\r\nm=audio 52566 UDP/TLS/RTP/SAVPF 109 9 0 8 101\r\nc=IN IP4 192.0.2.2\r\na=candidate:0 1 UDP 2122187007 192.0.2.2 52566 typ host\r\na=candidate:1 1 UDP 2122252543 fd00::2 39545 typ host\r\na=candidate:2 1 TCP 2105458943 192.0.2.2 9 typ host tcptype active\r\na=candidate:0 2 UDP 2122187006 192.0.2.2 46113 typ host\r\na=sendrecv\r\na=end-of-candidates\r\na=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\na=extmap:2/recvonly urn:ietf:params:rtp-hdrext:csrc-audio-level\r\na=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid\r\na=extmap:7 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\na=extmap-allow-mixed\r\na=fmtp:109 maxplaybackrate=48000;stereo=1;useinbandfec=1\r\na=fmtp:101 0-15\r\na=ice-pwd:ecc968e909045f11f08ff912317a1051\r\na=ice-ufrag:84d57af3\r\na=mid:0\r\na=msid:{79d8d8c9-062f-4d19-b1f4-29da40aab242} {c83b08c2-0f99-4201-8a91-3397ba0d4109}\r\na=rtcp:46113 IN IP4 192.0.2.2\r\na=rtcp-fb:109 transport-cc\r\na=rtcp-fb:9 transport-cc\r\na=rtcp-fb:0 transport-cc\r\na=rtcp-fb:8 transport-cc\r\na=rtcp-mux\r\na=rtpmap:109 opus/48000/2\r\na=rtpmap:9 G722/8000/1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=setup:actpass\r\na=ssrc:3561596293 cname:{a9152474-2b21-4886-ae1d-fb14578deed4}\r\n";

#[test]
fn firefox_offer_is_answered_with_opus_at_the_browser_rate() {
    assert!(is_webrtc_offer(FIREFOX_OFFER.as_bytes()));
    let prefs = CodecPrefs::new([Codec::Opus, Codec::Pcmu]).expect("prefs");
    let (peer, answer) =
        WebRtcPeer::accept_offer(Instant::now(), FIREFOX_OFFER, addr(VOXLINE), &prefs)
            .expect("answered");
    assert_eq!(peer.negotiated().codec.codec, Codec::Opus);
    assert!(answer.contains("a=rtpmap:109 opus/48000/2"), "{answer}");
    assert!(
        answer.contains("a=rtpmap:101 telephone-event/8000"),
        "{answer}"
    );
    let fmtp = answer
        .lines()
        .find(|l| l.starts_with("a=fmtp:109 "))
        .unwrap_or_else(|| panic!("no Opus fmtp in {answer}"));
    assert!(!fmtp.contains("maxplaybackrate=0"), "{fmtp}");
}
