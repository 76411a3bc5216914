//! Realtime backend tests: the client against the local mock of the provider protocol, the
//! built-in agents, and end-to-end calls through a running voxline.
//! One module per behaviour; the support modules are shared by the test binaries.

// Test code fails by panicking: helpers unwrap and expect like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../cascaded_support/mod.rs"]
mod cascaded_support;
#[path = "../common/mod.rs"]
mod common;
#[path = "../media_peer/mod.rs"]
mod media_peer;
#[path = "../media_stream_support/mod.rs"]
mod media_stream_support;
#[path = "../realtime_e2e_support/mod.rs"]
mod realtime_e2e_support;
#[path = "../realtime_support/mod.rs"]
mod realtime_support;
#[path = "../../tools/dsp_bench/signals.rs"]
mod signals;

mod agent_builtin;
mod agent_http_tools;
mod audio_out;
mod barge_in;
mod cascaded_analysis_resume;
mod cascaded_barge_in;
mod cascaded_failover;
mod cascaded_llm_failure;
mod cascaded_local_tts;
mod cascaded_memory;
mod cascaded_openai_stt;
mod cascaded_queued_replies;
mod cascaded_sipp_failover;
mod cascaded_sipp_turn;
mod cascaded_streaming;
mod cascaded_stt_reconnect;
mod cascaded_tools;
mod cascaded_transfer;
mod cascaded_tts_sockets;
mod cascaded_turn;
mod connect_errors;
mod e2e_allow_from;
mod e2e_audio_out;
mod e2e_barge_in;
mod e2e_echo_line;
mod e2e_fallback;
mod e2e_hang_up;
mod e2e_http_tool;
mod e2e_live_events;
mod e2e_local_barge_in;
mod e2e_local_turns;
mod e2e_outbound;
mod e2e_passthrough;
mod e2e_reconnect;
mod e2e_records;
mod e2e_send_dtmf;
mod e2e_transfer;
mod e2e_wideband;
mod late_wakeup;
mod mock_g711;
mod mock_strictness;
mod mock_truncate;
mod passthrough;
mod phone_chromium_realtime;
mod reconnect;
mod secrets;
mod session_setup;
mod tools;
