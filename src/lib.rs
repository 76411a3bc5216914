//! # voxline
//!
//! A native SIP/RTP user agent that puts AI voice agents on ordinary phone lines.
//!
//! ## Layering
//!
//! ```text
//!   config ── api                (on top: TOML + sip-profiles, HTTP)
//!      │
//!    call                        (one call: joins dialog, media and agent)
//!      │
//!   runtime                      (tokio: sockets, timers, DNS; the only clock reader)
//!      │
//!   sip   sdp   media   dsp   agent   (sans-IO cores)
//! ```
//!
//! * `sip` knows nothing of SDP or codecs: message bodies are opaque bytes to it.
//! * `sdp` and `dsp` depend on nothing internal; `media` may use `sdp` and `dsp`.
//! * `agent` backends know nothing of SIP or RTP.
//!
//! ## The drive contract of a sans-IO core
//!
//! Every core object (for example [`sip::SipStack`]) is driven one way: feed it input with a
//! `handle_*` method that takes `now: Instant`, then call `poll_output` until it returns
//! `Output::Timeout(deadline)`. The runtime sends what it is told to send and calls
//! `handle_timeout(now)` at the deadline. No core reads the clock or touches a socket, so
//! tests drive them with a virtual clock.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod call;
pub mod campaigns;
pub mod cluster;
pub mod config;
pub mod dsp;
pub mod media;
/// Call records (SQLite, crash-safe), JSONL transcripts; on top, like `api` and `config`.
pub mod records;
pub mod runtime;
pub mod sdp;
pub mod sip;
pub mod storage;
pub mod webhooks;
