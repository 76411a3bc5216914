//! Media tests: codecs, RTP/RTCP, the jitter buffer, the sans-IO media stream on a virtual
//! clock, SDP offer/answer, and end-to-end media through a running voxline.
//! One module per behaviour; the support modules are shared by the test binaries.

// Test code fails by panicking: helpers unwrap and expect like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../media_peer/mod.rs"]
mod media_peer;
#[path = "../media_stream_support/mod.rs"]
mod media_stream_support;
#[path = "../../tools/dsp_bench/signals.rs"]
mod signals;

mod codec_g711;
mod codec_roundtrip;
mod dsp_echo_path;
mod dtmf_inband;
mod dtmf_info;
mod dtmf_rfc4733;
mod e2e_bye_race;
mod e2e_dtmf_pcap;
mod e2e_hold;
mod e2e_info_dtmf;
mod e2e_pcap_echo;
mod e2e_pcap_packetisation;
mod e2e_play;
mod e2e_recording_baresip;
mod e2e_rtp_source;
mod e2e_rtp_timeout;
mod e2e_srtp_baresip;
mod e2e_ssrc_change;
mod jitter_buffer;
mod recording;
mod rtcp;
mod rtp_ports_descriptors;
mod rtp_receive;
mod sdp_errors;
mod sdp_offer_answer;
mod sdp_srtp;
mod stream_barge_in;
mod stream_dtmf;
mod stream_echo;
mod stream_hold;
mod stream_latching;
mod stream_loss;
mod stream_malformed;
mod stream_pacing;
mod stream_packetisation;
mod stream_passthrough;
mod stream_quality;
mod stream_rtcp;
mod stream_srtp;
mod stream_ssrc;
mod stream_timeout;
mod stream_webrtc;
