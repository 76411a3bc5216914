//! SIP tests: the stack against malformed, lossy and hostile input, and voxline against SIPp.
//! One module per behaviour; the support modules are shared by the test binaries.

// Test code fails by panicking: helpers unwrap and expect like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../harness/mod.rs"]
mod harness;
#[path = "../media_peer/mod.rs"]
mod media_peer;

mod cancel_race;
mod cluster_postgres;
mod connection_reuse;
mod dialog;
mod drain;
mod flood_memory;
mod flood_timers;
mod forked_2xx;
mod invite_retransmit_after_200;
mod kamailio_dispatch;
mod kamailio_tls;
mod limits;
mod lossy_network;
mod lost_200;
mod lost_ack;
mod malformed;
mod options_keepalive;
mod outbound_auth;
mod overload;
mod phone_chromium;
mod phone_firefox;
mod prack;
mod register;
mod resolve;
mod rfc2543_matching;
mod rfc4475_torture;
mod server_header;
mod session_timer;
mod sipp_bye_from_voxline;
mod sipp_call_limit;
mod sipp_cancel;
mod sipp_hold_resume;
mod sipp_inbound_call;
mod sipp_late_offer;
mod sipp_load;
mod sipp_options;
mod sipp_outbound_auth;
mod sipp_register;
mod sipp_transfer;
mod tcp_limits;
mod tls;
mod tx_retransmit_schedule;
mod tx_server_invite;
mod webrtc_call;
mod websocket;
