//! HTTP API, call control, configuration and call-record tests.
//! One module per behaviour; the support modules are shared by the test binaries.

// Test code fails by panicking: helpers unwrap and expect like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
#[path = "../media_peer/mod.rs"]
mod media_peer;
#[path = "../realtime_e2e_support/mod.rs"]
mod realtime_e2e_support;
#[path = "../../tools/dsp_bench/signals.rs"]
mod signals;

mod agents_api;
mod call_failover;
mod call_transfer;
mod call_trunk_settings;
mod call_variables;
mod campaigns;
mod cluster_campaign;
mod config_cascaded;
mod config_cli;
mod config_errors;
mod config_outcomes;
mod config_profiles;
mod config_realtime;
mod config_webhooks;
mod console_chromium;
mod console_session;
mod http;
mod input_limits;
mod openapi_schemathesis;
mod rate_limits;
mod recording_upload;
mod records;
mod records_batch;
mod records_calls;
mod records_crash;
mod records_search;
mod records_store;
mod records_transcript;
mod retention;
mod store_postgres;
mod webhooks;
