//! The OpenAI Realtime API backend (GA protocol, WebSocket).
//!
//! [`connect`] starts one session per call and returns the [`crate::agent::backend`] seam's
//! [`BackendHandle`](crate::agent::backend::BackendHandle); [`RealtimeConfig`] says where and
//! how. [`protocol`] holds the serde types of the events. A local server that speaks the same
//! protocol strictly, for tests and tools, is its own crate: `crates/mock-realtime`.

pub(crate) mod client;
pub mod protocol;

pub use client::{
    ApiKey, DEFAULT_API_KEY_ENV, DEFAULT_MODEL, DEFAULT_URL, NoiseReduction, RealtimeConfig,
    connect, render_instructions, session_update, wire_format,
};
pub use protocol::TurnDetection;
