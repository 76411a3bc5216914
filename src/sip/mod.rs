//! SIP signalling core (sans-IO).

pub mod auth;
pub mod resolve;
